"""Raw HTTP for the hostile-input tests: an upstream that sends exact bytes, and
readers for responses on a raw socket."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class RawUpstream:
    """An upstream answering each request head with ``script(head)``; keeps connections open.

    ``script`` may return None to switch the connection to echo mode (after a 101).
    """

    def __init__(self, script: Callable[[bytes], bytes | None]) -> None:
        self.script = script
        self.heads: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:  # the gateway may abort a connection
            self._exchange(conn)

    def _exchange(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                piece = conn.recv(65536)
                if not piece:
                    return
                buf += piece
            head, _, buf = buf.partition(b"\r\n\r\n")
            self.heads.append(head)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buf) < length:
                buf += conn.recv(65536)
            buf = buf[length:]
            answer = self.script(head)
            if answer is None:  # echo mode
                conn.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\n\r\n" + buf
                )
                while piece := conn.recv(65536):
                    conn.sendall(piece)
                return
            conn.sendall(answer)

    def close(self) -> None:
        self.sock.close()


def path_of(head: bytes) -> bytes:
    return head.split(b" ", 2)[1]


def read_responses(sock: socket.socket, count: int, timeout: float = 5.0) -> list[bytes]:
    """Read until ``count`` complete responses (Content-Length framed) have arrived."""
    sock.settimeout(timeout)
    buf = b""
    out: list[bytes] = []
    while len(out) < count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(buf) >= end + 4 + length:
                out.append(buf[: end + 4 + length])
                buf = buf[end + 4 + length :]
                continue
        try:
            piece = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not piece:
            break
        buf += piece
    return out


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def header_of(response: bytes, name: str) -> str | None:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None
