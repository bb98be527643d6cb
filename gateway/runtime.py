"""A config compiled for serving: routes with their policies, upstream groups, router."""

from __future__ import annotations

import asyncio
import re
import time

from .config import Config, Route
from .httpbits import TrustedPeers
from .metrics import Metrics, RouteStats
from .middleware import HOP_BY_HOP, Authenticator, CorsPolicy, HeaderRewriter, RateLimiter
from .router import Router
from .upstreams import UpstreamGroup

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

# Request headers the gateway always rewrites itself.
_REQUEST_DROP = HOP_BY_HOP | {
    b"host",
    b"x-request-id",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-real-ip",
    b"forwarded",
    b"content-length",
    b"expect",
}
_RESPONSE_DROP = HOP_BY_HOP | {b"x-request-id", b"content-length"}


class CompiledRoute:
    __slots__ = (
        "auth",
        "cors",
        "limiter",
        "max_body",
        "name",
        "preserve_host",
        "request_add",
        "request_drop",
        "response_add",
        "response_drop",
        "rewrite",
        "spec",
        "stats",
        "strip_prefix",
        "upstream",
        "websocket",
    )

    def __init__(self, spec: Route, config: Config, metrics: Metrics, workers: int) -> None:
        self.spec = spec
        self.name = spec.name
        self.stats: RouteStats = metrics.stats(spec.name)
        self.upstream = UpstreamGroup(spec.upstream)
        self.auth = Authenticator(spec.auth, config.api_keys) if spec.auth else None
        self.limiter = RateLimiter(spec.rate_limit, workers) if spec.rate_limit else None
        self.cors = CorsPolicy(spec.cors) if spec.cors else None
        req = HeaderRewriter(spec.request_headers)
        resp = HeaderRewriter(spec.response_headers)
        self.request_drop = _REQUEST_DROP | req.remove
        self.request_add = req.add
        self.response_drop = _RESPONSE_DROP | resp.remove
        self.response_add = resp.add
        self.max_body = spec.max_body_size
        self.strip_prefix = spec.strip_prefix
        self.rewrite = re.sub(r"\{(\w+)\}", r"{\1}", spec.rewrite) if spec.rewrite else None
        self.preserve_host = spec.preserve_host
        self.websocket = spec.websocket


class Runtime:
    def __init__(self, config: Config, metrics: Metrics, workers: int = 1) -> None:
        self.config = config
        self.routes = [CompiledRoute(r, config, metrics, workers) for r in config.routes]
        self.router: Router[CompiledRoute] = Router(
            [(r.spec.path, r.spec.host, r.spec.methods, r) for r in self.routes]
        )
        self._health: list[asyncio.Task[None]] = []
        server = config.server
        self.trusted_peers = TrustedPeers(server.trust_forwarded, server.trusted_proxies)

    def start(self) -> None:
        for r in self.routes:
            if r.spec.upstream.health_check is not None:
                self._health.append(
                    asyncio.get_running_loop().create_task(r.upstream.health_loop())
                )

    def sweep(self) -> None:
        now = time.monotonic()
        for r in self.routes:
            r.upstream.sweep()
            if r.limiter is not None:
                r.limiter.sweep(now)

    def retire(self) -> None:
        for task in self._health:
            task.cancel()
        for r in self.routes:
            r.upstream.retire()
