"""The HTTP side: client connections (httptools) and request forwarding.

A ``ClientConnection`` parses requests and calls ``handle`` for each (pipelined
requests wait in a queue).  ``handle`` applies the route's policies synchronously and
hands the request to a ``Forward``: a callback-driven state machine (no task or
future per request) that writes the request head to a pooled upstream connection,
writes body chunks through as they arrive, and writes the upstream's response to the
client from the parser callbacks, retrying per policy.  Both directions use transport
flow control, so memory stays bounded whatever the body size.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import cast

import httptools

from .accesslog import AccessLog, log_event
from .metrics import Metrics
from .middleware import new_request_id, retry_after, valid_request_id
from .runtime import IDEMPOTENT, CompiledRoute, Runtime
from .upstreams import TargetState, UpstreamConnection

STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
BODY_HIGH_WATER = 256 * 1024
STALE_FOR_UNSAFE = 2.0  # seconds: older idle connections are not used for non-idempotent requests

# reasons to pause reading from the client
PAUSE_BODY = 1
PAUSE_UPSTREAM = 2
PAUSE_PIPELINE = 4

METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}

# exchange results
OK, RETRY, LOST, TIMEOUT, CLIENT_GONE, TOO_LARGE = range(6)
# response body modes
M_NONE, M_RAW, M_CHUNKED, M_CLOSE = range(4)


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


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

    def check_timeouts(self) -> None:
        now = time.monotonic()
        for f in list(self.forwards):
            f.check_timeout(now)

    def factory(self) -> ClientConnection:
        return ClientConnection(self)

    def sweep_idle(self, keepalive_timeout: float) -> None:
        cutoff = time.monotonic() - keepalive_timeout
        for c in list(self.connections):
            if c.active is None and c.idle_since < cutoff:
                c.close()


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


class ClientConnection(asyncio.Protocol):
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client = ""
        self.client_b = b""
        self.xff_line = b""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.current: Request | None = None
        self.active: Request | None = None
        self.queue: deque[Request] = deque()
        self.paused = 0
        self.write_paused = False
        self.closed = False
        self.forward: Forward | None = None
        self.idle_since = time.monotonic()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) else "unix"
        self.client_b = self.client.encode()
        self.xff_line = b"X-Forwarded-For: %b\r\n" % self.client_b
        self.gw.connections.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.gw.connections.discard(self)
        if self.forward is not None:
            self.forward.end(CLIENT_GONE)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(501, "protocol upgrades are not supported")
        except httptools.HttpParserError:
            self._reject(400, "malformed HTTP request")

    def _reject(self, status: int, message: str) -> None:
        if self.active is None and self.transport is not None:
            self.transport.write(error_response(status, message, new_request_id(), False))
        self.close()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        self.write_paused = True
        f = self.forward
        if f is not None and f.up is not None:
            f.up.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        f = self.forward
        if f is not None and f.up is not None:
            f.up.resume_reading()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
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
        self.current = req
        if self.active is None:
            self.active = req
            handle(self.gw, req)
        else:
            self.queue.append(req)
            self.pause(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        if self.current is not None:
            self.current.feed(body)

    def on_message_complete(self) -> None:
        if self.current is not None:
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
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    def request_done(self, keep: bool) -> None:
        self.active = None
        self.forward = None
        if self.paused:
            self.resume(PAUSE_BODY | PAUSE_UPSTREAM)
        if not keep or self.closed:
            self.close()
            return
        if self.queue:
            req = self.active = self.queue.popleft()
            if not self.queue:
                self.resume(PAUSE_PIPELINE)
            asyncio.get_running_loop().call_soon(handle, self.gw, req)
        elif self.gw.draining:
            self.close()
        else:
            self.idle_since = time.monotonic()


class Ctx:
    """One request's bookkeeping: ids, outcome, and the metrics and log at the end."""

    __slots__ = (
        "bytes_out",
        "cors_lines",
        "done",
        "gw",
        "hd",
        "key",
        "req",
        "rid",
        "route",
        "start",
        "status",
        "target",
    )

    def __init__(self, gw: Gateway, req: Request) -> None:
        self.gw = gw
        self.req = req
        self.start = time.monotonic()
        self.hd = hd = {name.lower(): value for name, value in req.headers}
        rid = hd.get(b"x-request-id")
        self.rid = rid.decode() if rid is not None and valid_request_id(rid) else new_request_id()
        self.status = 0
        self.route: CompiledRoute | None = None
        self.target = ""
        self.bytes_out = 0
        self.key: str | None = None
        self.cors_lines = b""
        self.done = False
        gw.metrics.in_flight += 1

    def internal_error(self, e: BaseException) -> None:
        log_event("internal error", request_id=self.rid, error=repr(e))
        conn = self.req.conn
        if conn.forward is not None:
            conn.forward = None
        if conn.transport is not None and not conn.closed:
            if self.status <= 0:
                conn.transport.write(error_response(500, "internal gateway error", self.rid, False))
                self.status = 500
            else:
                conn.abort()
        self.finish(False)

    def finish(self, keep: bool) -> None:
        if self.done:
            return
        self.done = True
        gw = self.gw
        metrics = gw.metrics
        metrics.in_flight -= 1
        elapsed = time.monotonic() - self.start
        route = self.route
        status = self.status if self.status > 0 else 499
        metrics.observe(
            route.stats if route is not None else metrics.stats("none"), status, elapsed
        )
        req = self.req
        if gw.accesslog.enabled:
            gw.accesslog.log(
                {
                    "ts": round(time.time(), 3),
                    "request_id": self.rid,
                    "client": req.conn.client,
                    "method": req.method,
                    "path": req.url.decode("latin-1"),
                    "status": status,
                    "route": route.name if route is not None else None,
                    "upstream": self.target or None,
                    "duration_ms": round(elapsed * 1000, 3),
                    "bytes_out": self.bytes_out,
                    "api_key": self.key,
                    "user_agent": self.hd.get(b"user-agent", b"").decode("latin-1"),
                }
            )
        req.conn.request_done(keep and not req.conn.closed)


class Forward(Ctx):
    """A request's bookkeeping plus, when it goes upstream, the forwarding state machine
    (attempts, retries per policy); it is the sink of the upstream connection."""

    __slots__ = (
        "attached",
        "chunked_up",
        "client",
        "deadline",
        "discard",
        "froute",
        "group",
        "head",
        "head_only",
        "head_tail",
        "host_header",
        "idempotent",
        "keep",
        "mode",
        "pending",
        "quiet_retry",
        "response_started",
        "retries_left",
        "retry_status",
        "reused",
        "tstate",
        "up",
        "up_status",
    )

    def forward(
        self,
        route: CompiledRoute,
        head: bytes,
        head_tail: bytes,
        host_header: bytes,
        keep: bool,
        chunked_up: bool,
    ) -> None:
        """Start forwarding (``_serve`` decided the request goes upstream)."""
        req = self.req
        self.client = req.conn
        self.route = self.froute = route
        self.group = group = route.upstream
        self.head = head
        self.head_tail = head_tail
        self.host_header = host_header
        self.keep = keep
        self.chunked_up = chunked_up
        self.idempotent = req.method in IDEMPOTENT
        self.head_only = req.method == "HEAD"
        self.retries_left = group.spec.retries
        self.quiet_retry = True
        self.tstate: TargetState | None = None
        self.up: UpstreamConnection | None = None
        self.attached = False
        self.reused = False
        self.retry_status = False
        self.up_status = 0
        self.mode = M_NONE
        self.response_started = False
        self.discard = False
        self.pending: bytes | None = None
        group.note_request()
        self.deadline = time.monotonic() + group.spec.timeout.total
        self.client.forward = self
        self.attempt()

    # -- attempts ---------------------------------------------------------------
    def attempt(self) -> None:
        now = time.monotonic()
        if now >= self.deadline:
            self.fail(504, "upstream timed out")
            return
        target = self.tstate = self.group.pick(now, self.tstate)
        self.target = target.label
        up = target.take()
        if up is not None and not self.idempotent and now - up.idle_since > STALE_FOR_UNSAFE:
            up.close()
            up = None
        if up is None:
            timeout = min(self.group.spec.timeout.connect, self.deadline - now)
            asyncio.get_running_loop().create_task(self._connect(target, timeout))
            return
        self.send(up)

    async def _connect(self, target: TargetState, timeout: float) -> None:
        try:
            up = await target.connect(timeout)
        except (OSError, TimeoutError) as e:
            self._guard(self.connect_failed, target, e)
            return
        self._guard(self.send, up)

    def _guard(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception as e:
            self.internal_error(e)

    def connect_failed(self, target: TargetState, e: BaseException) -> None:
        target.failed(time.monotonic())
        timed_out = isinstance(e, TimeoutError)
        self.gw.metrics.upstream_error(
            self.froute.name, target.label, "timeout" if timed_out else "connect"
        )
        if self.client.closed:
            self.complete(False, -1)
        elif self.idempotent and self.retries_left > 0 and self.group.take_retry():
            self.retries_left -= 1
            self.attempt()
        elif timed_out:
            self.fail(504, "upstream connect timed out")
        else:
            self.fail(502, "upstream unavailable")

    def send(self, up: UpstreamConnection) -> None:
        req = self.req
        if self.client.closed or req.too_large:
            up.release()
            if req.too_large:
                self.fail(413, "request body too large", keep=False)
            else:
                self.complete(False, -1)
            return
        self.up = up
        self.attached = True
        self.reused = up.reused
        self.up_status = 0
        self.mode = M_NONE
        self.response_started = False
        self.discard = False
        self.pending = None
        self.retry_status = self.idempotent and not req.has_body and self.retries_left > 0
        up.start(self, self.head_only)
        transport = up.transport
        assert transport is not None
        target = self.tstate
        assert target is not None
        host = self.host_header if self.froute.preserve_host else target.hostport
        transport.write(b"%bHost: %b\r\n\r\n" % (self.head, host))
        if req.has_body:
            for chunk in req.chunks:
                self.request_body(chunk)
            req.chunks = []
            req.buffered = 0
            if req.complete:
                self.request_body_end()
            else:
                req.sink = self
            self.client.resume(PAUSE_BODY)
            if not up.writable:
                self.client.pause(PAUSE_UPSTREAM)
        self.gw.forwards.add(self)

    def check_timeout(self, now: float) -> None:
        up = self.up
        if not self.attached or up is None:
            return
        if now >= self.deadline or now - up.last_data >= self.group.spec.timeout.read:
            self.end(TIMEOUT)

    # -- request body, client -> upstream -------------------------------------------
    def request_body(self, data: bytes) -> None:
        up = self.up
        if up is None or up.closed or up.transport is None:
            return
        if self.chunked_up:
            up.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            up.transport.write(data)
        up.last_data = time.monotonic()

    def request_body_end(self) -> None:
        self.req.sink = None
        up = self.up
        if self.chunked_up and up is not None and up.transport is not None and not up.closed:
            up.transport.write(b"0\r\n\r\n")

    # -- response, upstream -> client (the upstream connection's sink) --------------
    def upstream_writable(self, writable: bool) -> None:
        if writable:
            self.client.resume(PAUSE_UPSTREAM)
        else:
            self.client.pause(PAUSE_UPSTREAM)

    def upstream_head(self, status: int, lines: list[bytes], keep_alive: bool) -> None:
        if not self.attached:
            return
        self.up_status = status
        if self.retry_status and status in (502, 503) and self.group.take_retry():
            self.discard = True  # drop this response, retry when it has been read
            return
        drop = self.froute.response_drop
        parts = [status_line(status)]
        length: bytes | None = None
        kept = False
        for line in lines:
            if not line:
                continue
            if line[0] in (32, 9):  # obs-fold continuation of the previous header
                if kept:
                    parts.append(line + b"\r\n")
                continue
            colon = line.find(b":")
            lname = line[:colon].lower()
            kept = lname not in drop
            if kept:
                parts.append(line + b"\r\n")
            elif lname == b"content-length":
                length = line[colon + 1 :].strip()
        req = self.req
        if req.method == "HEAD" or status in (204, 304):
            mode = M_NONE
            if length is not None:
                parts.append(b"Content-Length: %b\r\n" % length)
        elif length is not None:
            mode = M_RAW
            parts.append(b"Content-Length: %b\r\n" % length)
        elif req.version == "1.1":
            mode = M_CHUNKED
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            mode = M_CLOSE
            self.keep = False
        if not self.keep:
            parts.append(b"Connection: close\r\n")
        elif req.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(self.head_tail)
        self.mode = mode
        self.response_started = True
        head = b"".join(parts)
        if mode == M_NONE or (mode == M_RAW and length == b"0"):
            self._write(head)
        else:
            self.pending = head  # sent together with the first body bytes: one syscall

    def _write(self, data: bytes) -> None:
        t = self.client.transport
        if t is not None and not self.client.closed:
            t.write(data)
            if self.client.write_paused and self.up is not None:
                self.up.pause_reading()

    def upstream_body(self, data: bytes) -> None:
        if self.discard or not self.attached:
            return
        if self.mode == M_CHUNKED:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self.bytes_out += len(data)
        if self.pending is not None:
            data = self.pending + data
            self.pending = None
        self._write(data)

    def upstream_done(self) -> None:
        if not self.attached:
            return
        if not self.discard:
            tail = b"0\r\n\r\n" if self.mode == M_CHUNKED else b""
            if self.pending is not None:
                tail = self.pending + tail
                self.pending = None
            if tail:
                self._write(tail)
        self.end(RETRY if self.discard else OK)

    def upstream_lost(self, exc: BaseException | None) -> None:
        self.end(LOST)

    # -- outcomes ---------------------------------------------------------------
    def end(self, result: int) -> None:
        if not self.attached:
            if result == CLIENT_GONE:
                self.req.sink = None
            return
        self.attached = False
        self.gw.forwards.discard(self)
        self.req.sink = None
        try:
            self._outcome(result)
        except Exception as e:
            self.internal_error(e)

    def _outcome(self, result: int) -> None:
        up = self.up
        target = self.tstate
        assert up is not None and target is not None
        self.up = None
        metrics = self.gw.metrics
        if result == OK:
            target.succeeded()
            up.release()
            if self.up_status >= 500:
                metrics.upstream_error(self.froute.name, target.label, f"status_{self.up_status}")
            req = self.req
            self.complete(self.keep and req.complete and not req.too_large, self.up_status)
            return
        if result == RETRY:  # a 502/503 answered an idempotent request: try again
            target.failed(time.monotonic())
            metrics.upstream_error(self.froute.name, target.label, f"status_{self.up_status}")
            self.retries_left -= 1
            up.release()
            self.attempt()
            return
        up.close()
        if result == CLIENT_GONE:
            self.complete(False, self.up_status if self.response_started else -1)
            return
        if result == TOO_LARGE:
            if self.response_started:
                self.client.abort()
                self.complete(False, self.up_status)
            else:
                self.fail(413, "request body too large", keep=False)
            return
        if result == TIMEOUT:
            metrics.upstream_error(self.froute.name, target.label, "timeout")
            target.failed(time.monotonic())
            if self.response_started:
                self.client.abort()
                self.complete(False, self.up_status)
            else:
                self.fail(504, "upstream timed out")
            return
        # LOST: the upstream connection broke.
        retryable = self.idempotent and not self.req.has_body
        if not self.response_started and self.reused and self.quiet_retry and retryable:
            # a pooled connection the upstream had closed meanwhile: one free retry
            self.quiet_retry = False
            self.tstate = None
            self.attempt()
            return
        metrics.upstream_error(self.froute.name, target.label, "reset")
        target.failed(time.monotonic())
        if self.response_started:
            self.client.abort()
            self.complete(False, self.up_status)
        else:
            self.fail(502, "upstream closed the connection")

    def fail(self, status: int, message: str, keep: bool = True) -> None:
        req = self.req
        k = keep and self.keep and req.complete
        t = self.client.transport
        if t is not None and not self.client.closed:
            extra = self.cors_lines
            t.write(error_response(status, message, self.rid, k, extra, self.head_only))
        self.complete(k, status)

    def complete(self, keep: bool, status: int) -> None:
        self.gw.forwards.discard(self)
        if self.client.forward is self:
            self.client.forward = None
        self.status = status
        self.finish(keep)


def error_response(
    status: int,
    message: str,
    request_id: str,
    keep: bool,
    extra: bytes = b"",
    head_only: bool = False,
) -> bytes:
    body = json.dumps({"error": message, "status": status, "request_id": request_id}).encode()
    head = (
        b"%bContent-Type: application/json\r\nContent-Length: %d\r\nX-Request-ID: %b\r\n%b%b\r\n"
        % (
            status_line(status),
            len(body),
            request_id.encode(),
            extra,
            b"" if keep else b"Connection: close\r\n",
        )
    )
    return head if head_only else head + body


def simple_response(
    status: int, body: bytes, content_type: bytes, request_id: str, keep: bool, head_only: bool
) -> bytes:
    head = b"%bContent-Type: %b\r\nContent-Length: %d\r\nX-Request-ID: %b\r\n%b\r\n" % (
        status_line(status),
        content_type,
        len(body),
        request_id.encode(),
        b"" if keep else b"Connection: close\r\n",
    )
    return head if head_only else head + body


def handle(gw: Gateway, req: Request) -> None:
    ctx = Forward(gw, req)
    try:
        keep = _serve(ctx)
    except Exception as e:  # never a traceback to the client
        ctx.internal_error(e)
        return
    if keep is not None:
        ctx.finish(keep)


def _refuse(ctx: Forward, keep: bool, status: int, message: str, extra: bytes = b"") -> bool:
    """Answer ``status`` with a JSON error body instead of forwarding."""
    req = ctx.req
    ctx.status = status
    keep = keep and req.complete
    head_only = req.method == "HEAD"
    response = error_response(status, message, ctx.rid, keep, extra + ctx.cors_lines, head_only)
    transport = req.conn.transport
    if transport is not None:
        transport.write(response)
    return keep


def _serve(ctx: Forward) -> bool | None:
    """Answer the request, or start forwarding it (returns None: the Forward finishes it).

    Returns whether the client connection stays open.
    """
    gw = ctx.gw
    req = ctx.req
    hd = ctx.hd
    rid = ctx.rid
    conn = req.conn
    transport = conn.transport
    assert transport is not None
    rt = gw.runtime
    head_only = req.method == "HEAD"
    url = req.url
    if url[:1] != b"/":  # absolute-form or "*"
        if url.startswith((b"http://", b"https://")):
            rest = url.split(b"/", 3)
            url = b"/" + (rest[3] if len(rest) > 3 else b"")
        else:
            url = b"/"
    raw_path, sep, query = url.partition(b"?")
    path = raw_path.decode("latin-1")
    keep = req.keep_alive and not gw.draining

    # The gateway's own endpoints.
    if path in ("/healthz", "/readyz", "/metrics"):
        if req.method not in ("GET", "HEAD"):
            ctx.status = 405
            allow = b"Allow: GET, HEAD\r\n"
            transport.write(error_response(405, "method not allowed", rid, keep, allow, head_only))
            return keep
        if path == "/healthz":
            ctx.status = 200
            body = b'{"status":"ok"}'
        elif path == "/readyz":
            ready = gw.ready and not gw.draining
            ctx.status = 200 if ready else 503
            body = b'{"status":"ready"}' if ready else b'{"status":"draining"}'
        else:
            ctx.status = 200
            ctype = b"text/plain; version=0.0.4; charset=utf-8"
            transport.write(simple_response(200, gw.metrics.render(), ctype, rid, keep, head_only))
            return keep
        transport.write(
            simple_response(ctx.status, body, b"application/json", rid, keep, head_only)
        )
        return keep

    host_header = hd.get(b"host", b"")
    router = rt.router
    host = host_header.split(b":", 1)[0].lower().decode("latin-1") if router.has_hosts else ""
    match = router.match(host, path)
    if match is None:
        ctx.status = 404
        keep = keep and req.complete
        transport.write(error_response(404, "no route", rid, keep, b"", head_only))
        return keep
    group, params, rest_path = match
    origin = hd.get(b"origin")

    # CORS preflight is answered for the path whatever methods the route has.
    if req.method == "OPTIONS" and origin is not None and b"access-control-request-method" in hd:
        any_route = group.any_method or next(iter(group.by_method.values()))
        ctx.route = any_route
        policy = any_route.cors
        lines = (
            policy.preflight(origin, hd.get(b"access-control-request-headers")) if policy else None
        )
        if lines is not None:
            ctx.status = 204
            keep = keep and req.complete
            transport.write(
                b"%bX-Request-ID: %b\r\n%bContent-Length: 0\r\n%b\r\n"
                % (status_line(204), rid.encode(), lines, b"" if keep else b"Connection: close\r\n")
            )
            return keep

    route = group.pick(req.method)
    if route is None:
        ctx.route = group.any_method or next(iter(group.by_method.values()))
        ctx.status = 405
        keep = keep and req.complete
        allow = b"Allow: " + group.allow.encode() + b"\r\n"
        transport.write(error_response(405, "method not allowed", rid, keep, allow, head_only))
        return keep
    ctx.route = route

    if origin is not None and route.cors is not None:
        ctx.cors_lines = (route.cors.allow_origin(origin) or b"") + route.cors.response_tail

    auth = route.auth
    if auth is not None:
        code, ctx.key = auth.check(hd.get(auth.header) or hd.get(b"authorization"))
        if code == 401:
            challenge = b'WWW-Authenticate: ApiKey header="%b"\r\n' % auth.header
            return _refuse(ctx, keep, 401, "missing or invalid API key", challenge)
        if code == 403:
            return _refuse(ctx, keep, 403, "API key not allowed on this route")

    limiter = route.limiter
    if limiter is not None:
        bucket = ctx.key if (limiter.by_key and ctx.key) else conn.client
        wait = limiter.take(bucket, time.monotonic())
        if wait:
            retry = b"Retry-After: %d\r\n" % retry_after(wait)
            return _refuse(ctx, keep, 429, "rate limit exceeded", retry)

    # Request body framing.
    cl = hd.get(b"content-length")
    chunked_up = False
    if cl is not None:
        length = int(cl)
        if route.max_body and length > route.max_body:
            return _refuse(ctx, False, 413, "request body too large")
        req.has_body = length > 0
        framing = b"Content-Length: %b\r\n" % cl
    elif b"transfer-encoding" in hd:
        req.has_body = True
        chunked_up = True
        framing = b"Transfer-Encoding: chunked\r\n"
    else:
        framing = b"Content-Length: 0\r\n" if req.method in ("POST", "PUT", "PATCH") else b""
    req.limit = route.max_body
    if req.too_large or (route.max_body and req.received > route.max_body):
        return _refuse(ctx, False, 413, "request body too large")
    if not req.complete and hd.get(b"expect", b"").lower() == b"100-continue":
        transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # Upstream request head (the Host line is added per target).
    if route.rewrite is not None:
        upath = route.rewrite.format(**params).rstrip("/") + rest_path
        upath_b = (upath or "/").encode("latin-1")
    elif route.strip_prefix:
        upath_b = (rest_path or "/").encode("latin-1")
    else:
        upath_b = raw_path
    if sep:
        upath_b += b"?" + query
    drop = route.request_drop
    connection_tokens = hd.get(b"connection")
    if connection_tokens is not None and connection_tokens.lower() not in (b"keep-alive", b"close"):
        drop = drop | {t.strip().lower() for t in connection_tokens.split(b",")}
    xff = hd.get(b"x-forwarded-for")
    if rt.trust_forwarded:
        proto = hd.get(b"x-forwarded-proto", b"http")
        fwd_host = hd.get(b"x-forwarded-host") or host_header
    else:
        proto = b"http"
        fwd_host = host_header
    if fwd_host:
        forwarded = b"X-Forwarded-Proto: %b\r\nX-Forwarded-Host: %b\r\n" % (proto, fwd_host)
    else:  # an HTTP/1.0 client without Host
        forwarded = b"X-Forwarded-Proto: %b\r\n" % proto
    rid_b = rid.encode()
    kept = [b"%b: %b\r\n" % (n, v) for n, v in req.headers if n.lower() not in drop]
    head = b"%b %b HTTP/1.1\r\n%b%b%bX-Request-ID: %b\r\n%b%b" % (
        req.method.encode(),
        upath_b,
        b"".join(kept),
        b"X-Forwarded-For: %b, %b\r\n" % (xff, conn.client_b) if xff else conn.xff_line,
        forwarded,
        rid_b,
        route.request_add,
        framing,
    )
    head_tail = b"X-Request-ID: %b\r\n%b%b\r\n" % (rid_b, ctx.cors_lines, route.response_add)
    ctx.forward(route, head, head_tail, host_header, keep, chunked_up)
    return None
