"""Load the TOML config file and validate it into frozen dataclasses.

Every problem is reported as one ``ConfigError`` naming the key path, for example
``routes[2].upstream.timeout.connect: must be a positive number, got -1``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from .configmodel import (
    ALL_METHODS,
    Admin,
    Auth,
    Config,
    ConfigError,
    Cors,
    HeaderRules,
    HealthCheck,
    RateLimit,
    Route,
    Server,
    Target,
    Timeouts,
    Upstream,
)
from .configread import Table, header_name, header_value, show

__all__ = [
    "ALL_METHODS",
    "Admin",
    "Auth",
    "Config",
    "ConfigError",
    "Cors",
    "HeaderRules",
    "HealthCheck",
    "RateLimit",
    "Route",
    "Server",
    "Target",
    "Timeouts",
    "Upstream",
    "load",
    "parse",
]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
# A route path: RFC 3986 pchar and "/" (no query, fragment, spaces or escapes) plus {params}.
_PATH_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/{}]*$")
_URL = 'must be a URL like "http://host:port" (http only, no path, user, query or fragment)'


def _target(value: Any, where: str) -> Target:
    if not isinstance(value, str):
        raise ConfigError(where, f"{_URL}, got {show(value)}")
    if value != value.strip() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(where, f"{_URL}, got {show(value)}")
    parts = urlsplit(value)
    try:
        port = parts.port or 80
    except ValueError:
        raise ConfigError(where, f"has an invalid port, got {show(value)}") from None
    bad = parts.username is not None or parts.password is not None or "#" in value
    if bad or parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(where, f"{_URL}, got {show(value)}")
    if parts.query or "?" in value or port == 0:
        raise ConfigError(where, f"{_URL}, got {show(value)}")
    return Target(parts.hostname, port)


def _timeouts(table: Table | None) -> Timeouts:
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


def _upstream(table: Table) -> Upstream:
    raw = table.raw("targets")
    if raw is None:
        raise ConfigError(table.path("targets"), "is required")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            table.path("targets"), f"must be a non-empty list of URLs, got {show(raw)}"
        )
    targets = tuple(_target(v, f"{table.path('targets')}[{i}]") for i, v in enumerate(raw))
    d = Upstream(targets=targets)
    health: HealthCheck | None = None
    hc = table.table("health_check")
    if hc is not None:
        dh = HealthCheck()
        path = hc.string("path", dh.path)
        if not path.startswith("/"):
            raise ConfigError(hc.path("path"), f'must start with "/", got {show(path)}')
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


def _header_rules(table: Table | None) -> HeaderRules:
    if table is None:
        return HeaderRules()
    add: list[tuple[str, str]] = []
    add_table = table.table("add")
    if add_table is not None:
        for name, value in add_table.data.items():
            where = add_table.path(name)
            header_name(name, where)
            add.append((name, header_value(value, where)))
            add_table.seen.add(name)
    remove = table.strings("remove")
    for i, name in enumerate(remove):
        header_name(name, f"{table.path('remove')}[{i}]")
    table.done()
    return HeaderRules(tuple(add), frozenset(n.lower() for n in remove))


def _methods(table: Table, key: str) -> tuple[str, ...]:
    methods = table.strings(key)
    for i, m in enumerate(methods):
        if not _TOKEN.match(m) or m.upper() != m:
            raise ConfigError(
                f"{table.path(key)}[{i}]", f"must be an upper-case HTTP method, got {show(m)}"
            )
    return methods


def _header_names(table: Table, key: str) -> tuple[str, ...]:
    names = table.strings(key)
    for i, name in enumerate(names):
        header_name(name, f"{table.path(key)}[{i}]")
    return names


def _cors(table: Table | None) -> Cors | None:
    if table is None:
        return None
    d = Cors()
    result = Cors(
        allow_origins=table.strings("allow_origins", d.allow_origins),
        allow_methods=_methods(table, "allow_methods") or d.allow_methods,
        allow_headers=_header_names(table, "allow_headers"),
        expose_headers=_header_names(table, "expose_headers"),
        allow_credentials=table.boolean("allow_credentials", d.allow_credentials),
        max_age=table.integer("max_age", d.max_age, maximum=86400 * 365),
    )
    if result.allow_credentials and "*" in result.allow_origins:
        raise ConfigError(
            table.path("allow_credentials"), 'cannot be true when allow_origins has "*"'
        )
    table.done()
    return result


def _check_path(path: str, where: str) -> None:
    if not path.startswith("/"):
        raise ConfigError(where, f'must start with "/", got {show(path)}')
    if not _PATH_CHARS.match(path):
        raise ConfigError(
            where, f"must be a plain path (no query, fragment, escapes or spaces), got {show(path)}"
        )
    names: set[str] = set()
    for segment in path.strip("/").split("/"):
        if segment in (".", ".."):
            raise ConfigError(where, f'must not have "." or ".." segments, got {show(path)}')
        if "{" in segment or "}" in segment:
            m = _PARAM.match(segment)
            if not m:
                raise ConfigError(
                    where, f"has a bad parameter segment {show(segment)} (use /{{name}}/)"
                )
            if m.group(1) in names:
                raise ConfigError(where, f"repeats the parameter {show(m.group(1))}")
            names.add(m.group(1))


def _auth(table: Table | None, key_names: set[str]) -> Auth | None:
    if table is None:
        return None
    keys = table.strings("keys")
    if not keys:
        raise ConfigError(table.path("keys"), "must list at least one API key name")
    for i, k in enumerate(keys):
        if k not in key_names:
            raise ConfigError(
                f"{table.path('keys')}[{i}]",
                f"unknown API key {show(k)} (define it under [api_keys])",
            )
    header = header_name(table.string("header", "X-API-Key"), table.path("header"))
    table.done()
    return Auth(frozenset(keys), header.lower())


def _rate_limit(table: Table | None) -> RateLimit | None:
    if table is None:
        return None
    by = table.string("by", "key")
    if by not in ("key", "address"):
        raise ConfigError(table.path("by"), f'must be "key" or "address", got {show(by)}')
    if not table.has("rate"):
        raise ConfigError(table.path("rate"), "is required")
    rate = table.number("rate", 0.0, minimum=1e-6, maximum=1e6)
    burst = table.integer("burst", max(1, int(rate)), minimum=1, maximum=10**6)
    table.done()
    return RateLimit(rate=rate, burst=burst, by=by)


def _route(table: Table, index: int, server: Server, key_names: set[str]) -> Route:
    path = table.string("path", required=True)
    _check_path(path, table.path("path"))
    up = table.table("upstream")
    if up is None:
        raise ConfigError(table.path("upstream"), "is required")
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
        websocket=table.boolean("websocket", False),
        auth=_auth(table.table("auth"), key_names),
        rate_limit=_rate_limit(table.table("rate_limit")),
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


def _server(s: Table) -> Server:
    d = Server()
    proxies = s.strings("trusted_proxies")
    for i, cidr in enumerate(proxies):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            where = f"{s.path('trusted_proxies')}[{i}]"
            raise ConfigError(where, f"must be an IP address or CIDR, got {show(cidr)}") from None
    server = Server(
        host=s.string("host", d.host),
        port=s.integer("port", d.port, minimum=1, maximum=65535),
        workers=s.integer("workers", d.workers, maximum=1024),
        drain_timeout=s.number("drain_timeout", d.drain_timeout),
        keepalive_timeout=s.number("keepalive_timeout", d.keepalive_timeout),
        header_timeout=s.number("header_timeout", d.header_timeout),
        max_connections=s.integer("max_connections", d.max_connections, minimum=1),
        max_body_size=s.integer("max_body_size", d.max_body_size),
        access_log=s.boolean("access_log", d.access_log),
        trust_forwarded=s.boolean("trust_forwarded", d.trust_forwarded),
        trusted_proxies=proxies,
    )
    s.done()
    return server


def _admin(a: Table, server: Server) -> Admin:
    d = Admin()
    admin = Admin(
        host=a.string("host", d.host), port=a.integer("port", d.port, minimum=1, maximum=65535)
    )
    if admin.port == server.port:
        raise ConfigError(a.path("port"), f"must differ from server.port, got {admin.port}")
    a.done()
    return admin


def _api_keys(kt: Table | None) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    if kt is None:
        return keys
    for name, digest in kt.data.items():
        kt.seen.add(name)
        if not isinstance(digest, str) or not _HEX64.match(digest):
            raise ConfigError(
                kt.path(name),
                f"must be a sha256 hex digest (64 lower-case hex digits), got {show(digest)}",
            )
        keys.append((name, digest))
    return keys


def _no_duplicate(
    route: Route, index: int, seen: dict[tuple[str, str | None], list[Route]]
) -> None:
    """Two routes with one path and host must not both answer the same method."""
    key = (route.path.rstrip("/") or "/", route.host)
    for other in seen.setdefault(key, []):
        if other.name == route.name:
            raise ConfigError(f"routes[{index}].name", f"duplicate route name {show(route.name)}")
        if not route.methods or not other.methods or set(route.methods) & set(other.methods):
            raise ConfigError(
                f"routes[{index}].path",
                f"duplicate route: {show(route.path)} is already served by route "
                f"{show(other.name)} for the same host and methods",
            )
    seen[key].append(route)


def parse(data: dict[str, Any]) -> Config:
    """Validate a parsed TOML document into a ``Config``."""
    top = Table(data, "")
    server = _server(top.table("server") or Table({}, "server"))
    admin = _admin(top.table("admin") or Table({}, "admin"), server)
    keys = _api_keys(top.table("api_keys"))
    raw_routes = top.raw("routes")
    if raw_routes is None:
        raise ConfigError("routes", "is required (at least one [[routes]] table)")
    if not isinstance(raw_routes, list) or not raw_routes:
        raise ConfigError("routes", f"must be a non-empty array of tables, got {show(raw_routes)}")
    names = {n for n, _ in keys}
    routes: list[Route] = []
    seen_names: set[str] = set()
    by_path: dict[tuple[str, str | None], list[Route]] = {}
    for i, raw in enumerate(raw_routes):
        route = _route(Table(raw, f"routes[{i}]"), i, server, names)
        if route.name in seen_names:
            raise ConfigError(f"routes[{i}].name", f"duplicate route name {show(route.name)}")
        seen_names.add(route.name)
        _no_duplicate(route, i, by_path)
        routes.append(route)
    top.done()
    return Config(server=server, routes=tuple(routes), api_keys=tuple(keys), admin=admin)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: tables merge key by key; any other value (arrays of
    tables such as ``[[routes]]`` too) replaces the earlier one."""
    out = dict(base)
    for key, value in over.items():
        earlier = out.get(key)
        if isinstance(earlier, dict) and isinstance(value, dict):
            out[key] = merge(earlier, value)
        else:
            out[key] = value
    return out


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{path}: invalid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError("", f"{path}: not UTF-8 text (byte {e.start})") from None
    except RecursionError:
        raise ConfigError("", f"{path}: invalid TOML: nested too deeply") from None


def load(paths: str | Sequence[str]) -> Config:
    """Read the config file, or several merged in order (e.g. the config, then a file of API
    key hashes from a Secret), and validate the result as one; ``ConfigError`` on any problem."""
    files = [paths] if isinstance(paths, str) else list(paths)
    if not files:
        raise ConfigError("", "no config file given (use --config FILE)")
    data: dict[str, Any] = {}
    for path in files:
        data = merge(data, _read(path))
    try:
        return parse(data)
    except RecursionError:
        raise ConfigError("", f"{', '.join(files)}: nested too deeply") from None
