"""One request's bookkeeping: its headers, ids, outcome, and the metrics and log at the end."""

from __future__ import annotations

import time

from .accesslog import log_event
from .client import Gateway, Request
from .httpbits import error_response, redact_query
from .middleware import new_request_id, valid_request_id
from .runtime import CompiledRoute


class Ctx:
    __slots__ = (
        "bytes_out",
        "cors_lines",
        "done",
        "gw",
        "hd",
        "key",
        "repeated",
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
        # The last value wins; ``all_values`` has every one where a name repeats.
        headers = req.headers
        self.hd = hd = {name.lower(): value for name, value in headers}
        self.repeated = len(hd) != len(headers)
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

    def all_values(self, name: bytes) -> list[bytes]:
        """Every value of a header (``name`` in lower case), in order."""
        if not self.repeated:
            value = self.hd.get(name)
            return [] if value is None else [value]
        return [v for n, v in self.req.headers if n.lower() == name]

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
            self._log(status, elapsed)
        req.conn.request_done(keep and not req.conn.closed)

    def _log(self, status: int, elapsed: float) -> None:
        req = self.req
        route = self.route
        path = req.url.decode("latin-1")
        self.gw.accesslog.log(
            {
                "ts": round(time.time(), 3),
                "request_id": self.rid,
                "client": req.conn.client,
                "method": req.method,
                "path": redact_query(path) if "?" in path else path,
                "status": status,
                "route": route.name if route is not None else None,
                "upstream": self.target or None,
                "duration_ms": round(elapsed * 1000, 3),
                "bytes_out": self.bytes_out,
                "api_key": self.key,
                "user_agent": self.hd.get(b"user-agent", b"").decode("latin-1"),
            }
        )
