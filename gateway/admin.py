"""The admin listener: ``/healthz`` (liveness), ``/readyz`` (readiness) and ``/metrics``.

It listens on its own address (``[admin]``, default 127.0.0.1:9901, Envoy's admin
port), never on the public port.  Every worker opens it with SO_REUSEPORT, so it
answers with any number of workers; a ``/metrics`` scrape reaches one worker, and each
series carries that worker's ``worker`` label.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

from .client import Gateway
from .httpbits import MAX_HEAD, error_response, simple_response
from .middleware import new_request_id

PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"
MAX_ADMIN_CONNECTIONS = 64  # probes and scrapes need a few; more are closed at once
ADMIN_IDLE = 10.0  # seconds a connection may stay without a complete request
JSON = b"application/json"


def admin_response(gw: Gateway, method: bytes, path: bytes, keep: bool) -> bytes:
    """The full response to one admin request."""
    rid = new_request_id()
    path = path.split(b"?", 1)[0]
    if path not in (b"/healthz", b"/readyz", b"/metrics"):
        return error_response(404, "not an admin endpoint", rid, keep)
    head_only = method == b"HEAD"
    if method not in (b"GET", b"HEAD"):
        return error_response(405, "method not allowed", rid, keep, b"Allow: GET, HEAD\r\n")
    if path == b"/healthz":
        return simple_response(200, b'{"status":"ok"}', JSON, rid, keep, head_only)
    if path == b"/readyz":
        if gw.ready and not gw.draining:
            return simple_response(200, b'{"status":"ready"}', JSON, rid, keep, head_only)
        return simple_response(503, b'{"status":"draining"}', JSON, rid, keep, head_only)
    return simple_response(200, gw.metrics.render(), PROMETHEUS, rid, keep, head_only)


class AdminConnection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive; bodies are ignored, heads are bounded."""

    def __init__(self, gw: Gateway, open_connections: set[AdminConnection]) -> None:
        self.gw = gw
        self.open = open_connections
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.seen = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)
        if len(self.open) >= MAX_ADMIN_CONNECTIONS:
            t.abort()
            return
        self.open.add(self)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.open.discard(self)
        if self.timer is not None:
            self.timer.cancel()

    def _arm(self) -> None:
        """(Re)start the idle timer: a silent or slow connection is closed."""
        if self.timer is not None:
            self.timer.cancel()
        transport = self.transport
        if transport is not None:
            self.timer = asyncio.get_running_loop().call_later(ADMIN_IDLE, transport.close)

    def data_received(self, data: bytes) -> None:
        self.seen += len(data)
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._close(error_response(400, "malformed HTTP request", new_request_id(), False))
            return
        if self.seen > MAX_HEAD:
            self._close(b"")

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        self.seen = 0
        keep = self.parser.should_keep_alive() and not self.gw.draining
        response = admin_response(self.gw, self.parser.get_method(), self.url, keep)
        if self.transport is not None:
            self.transport.write(response)
            if not keep:
                self.transport.close()
            else:
                self._arm()

    def _close(self, last: bytes) -> None:
        if self.transport is not None:
            if last:
                self.transport.write(last)
            self.transport.close()


async def start_admin(gw: Gateway, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    open_connections: set[AdminConnection] = set()
    return await loop.create_server(
        lambda: AdminConnection(gw, open_connections), host, port, reuse_port=True
    )
