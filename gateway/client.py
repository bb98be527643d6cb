"""Client connections: httptools parsing with limits, pipelining and flow control.

A ``ClientConnection`` parses requests and calls ``proxy.handle`` for each (pipelined
requests wait in a queue).  The request head is bounded (URL, header count, line and
total size) and must arrive within the header timeout; trailers are dropped.  A
WebSocket upgrade turns the connection into a byte tunnel (see websocket.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from time import monotonic
from typing import TYPE_CHECKING, Protocol, cast

import httptools

from .accesslog import AccessLog
from .httpbits import MAX_HEAD, MAX_HEADER_LINE, MAX_HEADERS, MAX_URL, error_response
from .metrics import Metrics
from .middleware import new_request_id
from .request import (
    CLIENT_GONE,
    LOST,
    OK,
    PAUSE_BODY,
    PAUSE_PIPELINE,
    PAUSE_UPSTREAM,
    RETRY,
    TIMEOUT,
    TOO_LARGE,
    Request,
)
from .runtime import Runtime

__all__ = [
    "CLIENT_GONE",
    "LOST",
    "OK",
    "PAUSE_BODY",
    "PAUSE_PIPELINE",
    "PAUSE_UPSTREAM",
    "RETRY",
    "TIMEOUT",
    "TOO_LARGE",
    "ClientConnection",
    "Gateway",
    "Request",
]

if TYPE_CHECKING:
    from .forward import Forward

METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}


class Tunnel(Protocol):
    """Where a tunnelled connection's bytes go (websocket.WebSocketTunnel)."""

    def from_client(self, data: bytes) -> None: ...
    def client_closed(self) -> None: ...
    def client_writable(self, writable: bool) -> None: ...


class Gateway:
    """Per-worker state shared by all connections."""

    def __init__(self, runtime: Runtime, metrics: Metrics, accesslog: AccessLog) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.accesslog = accesslog
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self.ready = True
        self.forwards: set[Forward] = set()
        from .proxy import handle  # proxy imports this module

        self.handle = handle

    def check_timeouts(self) -> None:
        now = time.monotonic()
        for f in list(self.forwards):
            f.check_timeout(now)

    def factory(self) -> ClientConnection:
        return ClientConnection(self)

    def sweep_idle(self) -> None:
        """Close idle keep-alive connections and heads slower than the header timeout."""
        server = self.runtime.config.server
        now = time.monotonic()
        idle_cutoff = now - server.keepalive_timeout
        head_cutoff = now - server.header_timeout
        for c in list(self.connections):
            if c.active is not None or c.tunnel is not None:
                continue
            if c.head_since:
                if c.head_since < head_cutoff:
                    self.metrics.closed["header_timeout"] += 1
                    if c.head_seen:  # part of a head came: tell the client (RFC 9110 408)
                        c.reject(408, "request header timeout")
                    else:  # a connection that never sent a byte is just closed, as nginx does
                        c.close()
            elif c.idle_since < idle_cutoff:
                c.close()


class ClientConnection(asyncio.Protocol):
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client = ""
        self.client_b = b""
        self.forwarded_lines = b""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0  # bytes of the head being parsed (URL and header lines)
        self.head_seen = 0  # bytes received since the last head or message ended
        self.refused = 0  # 414 or 431 once a limit is passed
        self.elsewhere = False  # tunnelled, refused or closed: no more parsing
        self.reading_head = True
        self.head_since = time.monotonic()  # when the head being read began (0: none)
        self.current: Request | None = None
        self.active: Request | None = None
        self.queue: deque[Request] = deque()
        self.paused = 0
        self.write_paused = False
        self.closed = False
        self.forward: Forward | None = None
        self.tunnel: Tunnel | None = None
        self.eof = False
        self.idle_since = time.monotonic()
        self.trusted: tuple[object, bool] | None = None  # (runtime, trusted) cache

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) else "unix"
        self.client_b = self.client.encode()
        # what an untrusted peer's request carries upstream (the same for every request)
        self.forwarded_lines = (
            b"X-Forwarded-For: %b\r\nX-Real-IP: %b\r\nX-Forwarded-Proto: http\r\n"
            % (
                self.client_b,
                self.client_b,
            )
        )
        gw = self.gw
        if len(gw.connections) >= gw.runtime.config.server.max_connections:
            gw.metrics.closed["max_connections"] += 1
            self.closed = self.elsewhere = True
            self.transport.abort()  # over the per-worker cap, as nginx's worker_connections
            return
        gw.connections.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.gw.connections.discard(self)
        if self.forward is not None:
            self.forward.end(CLIENT_GONE)
        if self.tunnel is not None:
            self.tunnel.client_closed()

    def data_received(self, data: bytes) -> None:
        if self.elsewhere:  # a tunnel, a refused or a closed connection
            self._data_elsewhere(data)
            return
        if self.reading_head:
            self.head_seen += len(data)
            if not self.head_since:  # the first bytes of a head: the header timeout starts
                self.head_since = monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgraded(data, e)
            return
        except httptools.HttpParserError:
            self.reject(self.refused or 400, "malformed HTTP request")
            return
        if self.refused or self.head_seen > MAX_HEAD + MAX_HEADER_LINE:
            self.reject(self.refused or 431, _LIMIT_MESSAGES[self.refused or 431])

    def _data_elsewhere(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_client(data)

    def _upgraded(self, data: bytes, e: httptools.HttpParserUpgrade) -> None:
        """The parser stops after a request with Upgrade: the rest belongs to the tunnel."""
        offset = e.args[0] if e.args and isinstance(e.args[0], int) else len(data)
        rest = data[offset:]
        if self.tunnel is not None:
            if rest:
                self.tunnel.from_client(rest)
        elif self.active is None and self.current is None:
            self.reject(400, "malformed HTTP request")
        else:
            self.parser = None  # type: ignore[assignment]  # no further requests here
            self.elsewhere = True
            self.refused = 400  # anything more is ignored; the response ends the connection

    def reject(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed or served, and close."""
        if self.active is None and self.transport is not None and not self.closed:
            self.transport.write(error_response(status, message, new_request_id(), False))
        self.close()

    def eof_received(self) -> bool | None:
        if self.tunnel is not None:
            return True  # half-close: the tunnel passes the EOF on
        if self.active is not None:
            self.eof = True  # answer what was sent, then close
            return True
        return None  # close our side too

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.tunnel is not None:
            self.tunnel.client_writable(False)
            return
        f = self.forward
        if f is not None and f.up is not None:
            f.up.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tunnel is not None:
            self.tunnel.client_writable(True)
            return
        f = self.forward
        if f is not None and f.up is not None:
            f.up.resume_reading()

    # httptools callbacks (no on_message_begin: a Python call per request for nothing)
    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URL and not self.refused:
            self.refused = 414

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.reading_head:  # else a trailer (after a chunked body): dropped
            self.head_size += len(name) + len(value) + 4
            self.headers.append((name, value))

    def _head_too_large(self) -> bool:
        """The head passes the limits (the parser's memory is bounded by ``head_seen``)."""
        headers = self.headers
        if len(headers) > MAX_HEADERS or self.head_size > MAX_HEAD:
            return True
        if self.head_size > MAX_HEADER_LINE:  # only then can one line be too long
            return any(len(n) + len(v) > MAX_HEADER_LINE for n, v in headers)
        return False

    def on_headers_complete(self) -> None:
        limits = len(self.headers) > MAX_HEADERS or self.head_size > MAX_HEADER_LINE
        if self.refused or (limits and self._head_too_large()):
            self.refused = self.refused or 431
            return
        p = self.parser
        method = p.get_method()
        req = Request(
            self,
            METHODS.get(method) or method.decode(),
            self.url,
            self.headers,
            p.get_http_version(),
            p.should_keep_alive(),
        )
        self.url = b""
        self.headers = []
        self.head_size = 0
        self.head_seen = 0
        self.reading_head = False
        self.head_since = 0.0
        self.current = req
        if self.active is None:
            self.active = req
            self.gw.handle(self.gw, req)
        else:
            self.queue.append(req)
            self.pause(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        if self.current is not None and not self.refused:
            self.current.feed(body)

    def on_message_complete(self) -> None:
        self.head_seen = 0
        self.reading_head = True  # the next request's head, whenever it comes
        if self.current is not None and not self.refused:
            self.current.finish()

    # flow control and lifecycle
    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def close(self) -> None:
        self.elsewhere = True
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.elsewhere = True
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    def request_done(self, keep: bool) -> None:
        self.active = None
        self.forward = None
        if self.tunnel is not None:
            return
        if self.paused:
            self.resume(PAUSE_BODY | PAUSE_UPSTREAM)
        if not keep or self.closed or self.refused:
            self.close()
            return
        if self.queue:
            req = self.active = self.queue.popleft()
            if not self.queue:
                self.resume(PAUSE_PIPELINE)
            asyncio.get_running_loop().call_soon(self.gw.handle, self.gw, req)
        elif self.gw.draining or self.eof:
            self.close()
        else:
            self.idle_since = time.monotonic()


_LIMIT_MESSAGES = {
    400: "malformed HTTP request",
    414: "request URL too long",
    431: "request header fields too large",
}
