"""Load the TOML config file and validate it into frozen dataclasses.

Every problem is reported as one ``ConfigError`` naming the key path, for example
``routes[2].upstream.timeout.connect: must be a positive number, got -1``.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


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
    max_idle: int = 64
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
    max_body_size: int = 10 * 1024 * 1024
    access_log: bool = True
    trust_forwarded: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    server: Server
    routes: tuple[Route, ...]
    api_keys: tuple[tuple[str, str], ...]  # (name, sha256 hex)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


class _Table:
    """A TOML table being read: typed getters that know their key path."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(where, f"must be a table, got {_show(data)}")
        self.data: dict[str, Any] = data
        self.where = where
        self.seen: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key)

    def table(self, key: str) -> _Table | None:
        value = self.raw(key)
        return None if value is None else _Table(value, self.path(key))

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.raw(key)
        if value is None:
            if required or default is None:
                raise ConfigError(self.path(key), "is required")
            return default
        if not isinstance(value, str) or not value:
            raise ConfigError(self.path(key), f"must be a non-empty string, got {_show(value)}")
        return value

    def opt_string(self, key: str) -> str | None:
        return self.string(key) if self.has(key) else self.raw(key)

    def number(self, key: str, default: float, *, allow_zero: bool = False) -> float:
        value = self.raw(key)
        if value is None:
            return default
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not (value >= 0 if allow_zero else value > 0) or value != value:
            kind = "a non-negative number" if allow_zero else "a positive number"
            raise ConfigError(self.path(key), f"must be {kind}, got {_show(value)}")
        return float(value)

    def integer(
        self, key: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(
                self.path(key), f"must be an integer >= {minimum}, got {_show(value)}"
            )
        if maximum is not None and value > maximum:
            raise ConfigError(self.path(key), f"must be an integer <= {maximum}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.path(key), f"must be true or false, got {_show(value)}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, list):
            raise ConfigError(self.path(key), f"must be a list of strings, got {_show(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise ConfigError(
                    f"{self.path(key)}[{i}]", f"must be a non-empty string, got {_show(item)}"
                )
        return tuple(value)

    def done(self) -> None:
        for key in self.data:
            if key not in self.seen:
                raise ConfigError(self.path(key), "unknown key")


def _header_name(value: str, where: str) -> str:
    if not _TOKEN.match(value):
        raise ConfigError(where, f"is not a valid header name, got {_show(value)}")
    return value


def _target(value: Any, where: str) -> Target:
    if not isinstance(value, str):
        raise ConfigError(
            where, f'must be a URL string like "http://host:port", got {_show(value)}'
        )
    parts = urlsplit(value)
    try:
        port = parts.port or 80
    except ValueError:
        raise ConfigError(where, f"has an invalid port, got {_show(value)}") from None
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ConfigError(
            where, f'must be a URL like "http://host:port" (http only, no path), got {_show(value)}'
        )
    return Target(parts.hostname, port)


def _timeouts(table: _Table | None) -> Timeouts:
    if table is None:
        return Timeouts()
    d = Timeouts()
    result = Timeouts(
        connect=table.number("connect", d.connect),
        read=table.number("read", d.read),
        total=table.number("total", d.total),
    )
    table.done()
    return result


def _upstream(table: _Table) -> Upstream:
    raw = table.raw("targets")
    if raw is None:
        raise ConfigError(table.path("targets"), "is required")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            table.path("targets"), f"must be a non-empty list of URLs, got {_show(raw)}"
        )
    targets = tuple(_target(v, f"{table.path('targets')}[{i}]") for i, v in enumerate(raw))
    d = Upstream(targets=targets)
    health: HealthCheck | None = None
    hc = table.table("health_check")
    if hc is not None:
        dh = HealthCheck()
        path = hc.string("path", dh.path)
        if not path.startswith("/"):
            raise ConfigError(hc.path("path"), f'must start with "/", got {_show(path)}')
        health = HealthCheck(
            path, hc.number("interval", dh.interval), hc.number("timeout", dh.timeout)
        )
        hc.done()
    result = Upstream(
        targets=targets,
        timeout=_timeouts(table.table("timeout")),
        retries=table.integer("retries", d.retries, maximum=10),
        retry_budget=table.number("retry_budget", d.retry_budget, allow_zero=True),
        max_fails=table.integer("max_fails", d.max_fails),
        fail_timeout=table.number("fail_timeout", d.fail_timeout),
        max_idle=table.integer("max_idle", d.max_idle),
        idle_timeout=table.number("idle_timeout", d.idle_timeout),
        health_check=health,
    )
    table.done()
    return result


def _header_rules(table: _Table | None) -> HeaderRules:
    if table is None:
        return HeaderRules()
    add: list[tuple[str, str]] = []
    add_table = table.table("add")
    if add_table is not None:
        for name, value in add_table.data.items():
            where = add_table.path(name)
            _header_name(name, where)
            if not isinstance(value, str) or "\r" in value or "\n" in value:
                raise ConfigError(where, f"must be a single-line string, got {_show(value)}")
            add.append((name, value))
            add_table.seen.add(name)
    remove = table.strings("remove")
    for i, name in enumerate(remove):
        _header_name(name, f"{table.path('remove')}[{i}]")
    table.done()
    return HeaderRules(tuple(add), frozenset(n.lower() for n in remove))


def _methods(table: _Table, key: str) -> tuple[str, ...]:
    methods = table.strings(key)
    for i, m in enumerate(methods):
        if not _TOKEN.match(m) or m.upper() != m:
            raise ConfigError(
                f"{table.path(key)}[{i}]", f"must be an upper-case HTTP method, got {_show(m)}"
            )
    return methods


def _cors(table: _Table | None) -> Cors | None:
    if table is None:
        return None
    d = Cors()
    result = Cors(
        allow_origins=table.strings("allow_origins", d.allow_origins),
        allow_methods=_methods(table, "allow_methods") or d.allow_methods,
        allow_headers=table.strings("allow_headers"),
        expose_headers=table.strings("expose_headers"),
        allow_credentials=table.boolean("allow_credentials", d.allow_credentials),
        max_age=table.integer("max_age", d.max_age),
    )
    if result.allow_credentials and "*" in result.allow_origins:
        raise ConfigError(
            table.path("allow_credentials"), 'cannot be true when allow_origins has "*"'
        )
    table.done()
    return result


def _check_path(path: str, where: str) -> None:
    if not path.startswith("/"):
        raise ConfigError(where, f'must start with "/", got {_show(path)}')
    names: set[str] = set()
    for segment in path.strip("/").split("/"):
        if "{" in segment or "}" in segment:
            m = _PARAM.match(segment)
            if not m:
                raise ConfigError(
                    where, f"has a bad parameter segment {_show(segment)} (use /{{name}}/)"
                )
            if m.group(1) in names:
                raise ConfigError(where, f"repeats the parameter {_show(m.group(1))}")
            names.add(m.group(1))


def _route(table: _Table, index: int, server: Server, key_names: set[str]) -> Route:
    path = table.string("path", required=True)
    _check_path(path, table.path("path"))
    up = table.table("upstream")
    if up is None:
        raise ConfigError(table.path("upstream"), "is required")
    auth: Auth | None = None
    auth_table = table.table("auth")
    if auth_table is not None:
        keys = auth_table.strings("keys")
        if not keys:
            raise ConfigError(auth_table.path("keys"), "must list at least one API key name")
        for i, k in enumerate(keys):
            if k not in key_names:
                raise ConfigError(
                    f"{auth_table.path('keys')}[{i}]",
                    f"unknown API key {_show(k)} (define it under [api_keys])",
                )
        header = _header_name(auth_table.string("header", "X-API-Key"), auth_table.path("header"))
        auth = Auth(frozenset(keys), header.lower())
        auth_table.done()
    rate: RateLimit | None = None
    rl = table.table("rate_limit")
    if rl is not None:
        by = rl.string("by", "key")
        if by not in ("key", "address"):
            raise ConfigError(rl.path("by"), f'must be "key" or "address", got {_show(by)}')
        r = rl.number("rate", 0.0)
        if not rl.has("rate"):
            raise ConfigError(rl.path("rate"), "is required")
        rate = RateLimit(rate=r, burst=rl.integer("burst", max(1, int(r)), minimum=1), by=by)
        rl.done()
    rewrite = table.opt_string("rewrite")
    if rewrite is not None:
        _check_path(rewrite, table.path("rewrite"))
    host = table.opt_string("host")
    route = Route(
        name=table.string("name", f"route{index}"),
        path=path,
        upstream=_upstream(up),
        methods=_methods(table, "methods"),
        host=host.lower() if host else None,
        strip_prefix=table.boolean("strip_prefix", False),
        rewrite=rewrite,
        preserve_host=table.boolean("preserve_host", False),
        max_body_size=table.integer("max_body_size", server.max_body_size),
        auth=auth,
        rate_limit=rate,
        request_headers=_header_rules(table.table("request_headers")),
        response_headers=_header_rules(table.table("response_headers")),
        cors=_cors(table.table("cors")),
    )
    if route.rewrite is not None:
        params = set(re.findall(r"\{(\w+)\}", route.path))
        for name in re.findall(r"\{(\w+)\}", route.rewrite):
            if name not in params:
                raise ConfigError(
                    table.path("rewrite"), f"uses {{{name}}} which is not a parameter of path"
                )
    table.done()
    return route


def parse(data: dict[str, Any]) -> Config:
    """Validate a parsed TOML document into a ``Config``."""
    top = _Table(data, "")
    s = top.table("server") or _Table({}, "server")
    d = Server()
    server = Server(
        host=s.string("host", d.host),
        port=s.integer("port", d.port, maximum=65535),
        workers=s.integer("workers", d.workers, maximum=1024),
        drain_timeout=s.number("drain_timeout", d.drain_timeout),
        keepalive_timeout=s.number("keepalive_timeout", d.keepalive_timeout),
        max_body_size=s.integer("max_body_size", d.max_body_size),
        access_log=s.boolean("access_log", d.access_log),
        trust_forwarded=s.boolean("trust_forwarded", d.trust_forwarded),
    )
    s.done()
    keys: list[tuple[str, str]] = []
    kt = top.table("api_keys")
    if kt is not None:
        for name, digest in kt.data.items():
            kt.seen.add(name)
            if not isinstance(digest, str) or not _HEX64.match(digest):
                raise ConfigError(
                    kt.path(name),
                    f"must be a sha256 hex digest (64 lower-case hex digits), got {_show(digest)}",
                )
            keys.append((name, digest))
    raw_routes = top.raw("routes")
    if raw_routes is None:
        raise ConfigError("routes", "is required (at least one [[routes]] table)")
    if not isinstance(raw_routes, list) or not raw_routes:
        raise ConfigError("routes", f"must be a non-empty array of tables, got {_show(raw_routes)}")
    names = {n for n, _ in keys}
    routes: list[Route] = []
    seen_names: set[str] = set()
    for i, raw in enumerate(raw_routes):
        route = _route(_Table(raw, f"routes[{i}]"), i, server, names)
        if route.name in seen_names:
            raise ConfigError(f"routes[{i}].name", f"duplicate route name {_show(route.name)}")
        seen_names.add(route.name)
        routes.append(route)
    top.done()
    return Config(server=server, routes=tuple(routes), api_keys=tuple(keys))


def load(path: str) -> Config:
    """Read and validate the config file; raises ``ConfigError`` on any problem."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{path}: invalid TOML: {e}") from None
    return parse(data)
