"""WebSocket: after the handshake is checked (proxy.py), bytes are tunnelled both ways.

The upstream's answer is passed on as is: a ``101 Switching Protocols`` opens the
tunnel, anything else (a 401, a 404) reaches the client and ends the connection.
Flow control works in both directions, so a slow side never makes the other buffer.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, cast

from .client import ClientConnection
from .httpbits import error_response

if TYPE_CHECKING:
    from .forward import Forward
    from .runtime import CompiledRoute

MAX_EARLY = 64 * 1024  # client bytes held while the upstream connection opens


class WebSocketTunnel(asyncio.Protocol):
    """The upstream side of a tunnel, and the client connection's ``Tunnel``."""

    def __init__(self, ctx: Forward, head: bytes) -> None:
        self.ctx = ctx
        self.client: ClientConnection = ctx.req.conn
        self.head = head
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []
        self.early_size = 0
        self.status_seen = False
        self.closed = False

    # the upstream connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)
        t.write(self.head)
        for chunk in self.early:
            t.write(chunk)
        self.early = []
        self.client.resume(1)

    def data_received(self, data: bytes) -> None:
        if not self.status_seen:
            self.status_seen = True
            self.ctx.status = _status_of(data)
        self.ctx.bytes_out += len(data)
        client = self.client
        if client.transport is not None and not client.closed:
            client.transport.write(data)

    def eof_received(self) -> bool | None:
        t = self.client.transport
        if t is not None and not self.client.closed and t.can_write_eof():
            t.write_eof()
            return True
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.client.close()
        self._finish()

    def pause_writing(self) -> None:
        self.client.pause(2)

    def resume_writing(self) -> None:
        self.client.resume(2)

    # the client connection's Tunnel
    def from_client(self, data: bytes) -> None:
        t = self.transport
        if t is None:
            self.early.append(data)
            self.early_size += len(data)
            if self.early_size > MAX_EARLY:
                self.client.pause(1)
        elif not self.closed:
            t.write(data)

    def client_closed(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.closed = True
        self._finish()

    def client_writable(self, writable: bool) -> None:
        t = self.transport
        if t is not None and not self.closed:
            if writable:
                t.resume_reading()
            else:
                t.pause_reading()

    def _finish(self) -> None:
        if not self.ctx.done:
            self.ctx.finish(False)


def _status_of(data: bytes) -> int:
    parts = data.split(b" ", 2)
    try:
        return int(parts[1]) if len(parts) > 1 else 502
    except ValueError:
        return 502


def start_tunnel(ctx: Forward, route: CompiledRoute, head: bytes) -> None:
    """Open the upstream connection and make the client connection a tunnel."""
    conn = ctx.req.conn
    ctx.route = route
    group = route.upstream
    target = group.pick(time.monotonic(), None)
    ctx.target = target.label
    host = ctx.hd.get(b"host", b"") if route.preserve_host else target.hostport
    tunnel = WebSocketTunnel(ctx, head + b"Host: %b\r\n\r\n" % host)
    conn.tunnel = tunnel
    conn.elsewhere = True  # bytes from the client now go to the tunnel
    conn.parser = None  # type: ignore[assignment]  # no more HTTP requests on this connection
    asyncio.get_running_loop().create_task(_connect(ctx, tunnel, target.host, target.port))


async def _connect(ctx: Forward, tunnel: WebSocketTunnel, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    timeout = ctx.route.upstream.spec.timeout.connect if ctx.route is not None else 5.0
    try:
        await asyncio.wait_for(loop.create_connection(lambda: tunnel, host, port), timeout)
    except (OSError, TimeoutError):
        conn = ctx.req.conn
        if conn.transport is not None and not conn.closed:
            conn.transport.write(error_response(502, "upstream unavailable", ctx.rid, False))
        ctx.status = 502
        tunnel.closed = True
        conn.close()
        if not ctx.done:
            ctx.finish(False)
