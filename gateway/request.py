"""One parsed request: its head, and its body on the way (buffered until a sink takes it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .client import ClientConnection
    from .forward import Forward

BODY_HIGH_WATER = 256 * 1024

# reasons to pause reading from the client
PAUSE_BODY = 1
PAUSE_UPSTREAM = 2
PAUSE_PIPELINE = 4

# exchange results (what a Forward is told when an exchange ends)
OK, RETRY, LOST, TIMEOUT, CLIENT_GONE, TOO_LARGE = range(6)


class Request:
    __slots__ = (
        "buffered",
        "chunks",
        "complete",
        "conn",
        "has_body",
        "headers",
        "keep_alive",
        "limit",
        "method",
        "received",
        "sink",
        "too_large",
        "url",
        "version",
    )

    def __init__(
        self,
        conn: ClientConnection,
        method: str,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        version: str,
        keep_alive: bool,
    ) -> None:
        self.conn = conn
        self.method = method
        self.url = url
        self.headers = headers
        self.version = version
        self.keep_alive = keep_alive
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.received = 0
        self.complete = False
        self.has_body = False
        self.limit = 0
        self.too_large = False
        self.sink: Forward | None = None

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.limit and self.received > self.limit:
            if not self.too_large:
                self.too_large = True
                if self.sink is not None:
                    self.sink.end(TOO_LARGE)
            return
        sink = self.sink
        if sink is not None:
            sink.request_body(data)
        else:
            self.chunks.append(data)
            self.buffered += len(data)
            if self.buffered > BODY_HIGH_WATER:
                self.conn.pause(PAUSE_BODY)

    def finish(self) -> None:
        self.complete = True
        if self.sink is not None and not self.too_large:
            self.sink.request_body_end()

    def settled(self) -> bool:
        """Whether the whole request has been (or will have been) read: safe to keep alive."""
        if self.complete:
            return True
        for name, value in self.headers:
            lname = name.lower()
            if lname == b"transfer-encoding" or (
                lname == b"content-length" and value.strip() != b"0"
            ):
                return False
        return True
