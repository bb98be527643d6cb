"""Forwarding one request: a callback-driven state machine (no task or future per request).

It writes the request head to a pooled upstream connection, writes body chunks through
as they arrive, and writes the upstream's response to the client from the parser
callbacks, retrying per policy.  Both directions use transport flow control, so memory
stays bounded whatever the body size.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .client import (
    CLIENT_GONE,
    LOST,
    OK,
    PAUSE_BODY,
    PAUSE_UPSTREAM,
    RETRY,
    TIMEOUT,
    TOO_LARGE,
)
from .ctx import Ctx
from .httpbits import error_response, filter_response_head, status_line
from .runtime import IDEMPOTENT, CompiledRoute
from .upstreams import TargetState, UpstreamConnection

STALE_FOR_UNSAFE = 2.0  # seconds: older idle connections are not used for non-idempotent requests

# response body modes
M_NONE, M_RAW, M_CHUNKED, M_CLOSE = range(4)


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
        kept, length = filter_response_head(lines, self.froute.response_drop)
        parts = [status_line(status), *kept]
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
        if result == TIMEOUT and not self.req.complete and not self.response_started:
            # the client had not finished its body: its slowness, not the upstream's
            self.fail(408, "request body timed out", keep=False)
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
        k = keep and self.keep and req.settled()
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
