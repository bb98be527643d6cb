"""The validated config: frozen dataclasses, and the one error type for config problems."""

from __future__ import annotations

from dataclasses import dataclass

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class ConfigError(Exception):
    """A config problem: ``where`` is the key path, ``problem`` what is wrong with it."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0
    total: float = 60.0


@dataclass(frozen=True, slots=True)
class HealthCheck:
    path: str = "/healthz"
    interval: float = 5.0
    timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Upstream:
    targets: tuple[Target, ...]
    timeout: Timeouts = Timeouts()
    retries: int = 2
    retry_budget: float = 0.2
    max_fails: int = 3
    fail_timeout: float = 10.0
    max_idle: int = 256
    idle_timeout: float = 30.0
    health_check: HealthCheck | None = None


@dataclass(frozen=True, slots=True)
class Auth:
    keys: frozenset[str]
    header: str = "x-api-key"


@dataclass(frozen=True, slots=True)
class RateLimit:
    rate: float
    burst: int
    by: str = "key"  # "key" (API key, falling back to address) or "address"


@dataclass(frozen=True, slots=True)
class HeaderRules:
    add: tuple[tuple[str, str], ...] = ()
    remove: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Cors:
    allow_origins: tuple[str, ...] = ("*",)
    allow_methods: tuple[str, ...] = ALL_METHODS
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age: int = 600


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    path: str
    upstream: Upstream
    methods: tuple[str, ...] = ()  # empty: any method
    host: str | None = None
    strip_prefix: bool = False
    rewrite: str | None = None
    preserve_host: bool = False
    max_body_size: int = 0  # 0: unlimited
    websocket: bool = False  # tunnel "Upgrade: websocket" requests
    auth: Auth | None = None
    rate_limit: RateLimit | None = None
    request_headers: HeaderRules = HeaderRules()
    response_headers: HeaderRules = HeaderRules()
    cors: Cors | None = None


@dataclass(frozen=True, slots=True)
class Server:
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 0  # 0: one per available CPU
    drain_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    header_timeout: float = 10.0  # the whole request head must arrive within this
    max_connections: int = 10000  # per worker; more are closed at once
    max_body_size: int = 10 * 1024 * 1024
    access_log: bool = True
    trust_forwarded: bool = False
    trusted_proxies: tuple[str, ...] = ()  # CIDRs; empty with trust_forwarded: any peer


@dataclass(frozen=True, slots=True)
class Admin:
    """The admin listener: /healthz, /readyz and /metrics (never on the public port)."""

    host: str = "127.0.0.1"
    port: int = 9901


@dataclass(frozen=True, slots=True)
class Config:
    server: Server
    routes: tuple[Route, ...]
    api_keys: tuple[tuple[str, str], ...]  # (name, sha256 hex)
    admin: Admin = Admin()
