"""The request path: validate the target, route, apply the route's policies, then answer
or hand the request to a ``Forward`` (forward.py) or a WebSocket tunnel (websocket.py)."""

from __future__ import annotations

import time

from .client import Gateway, Request
from .forward import Forward
from .httpbits import (
    connection_tokens,
    error_response,
    normalise_path,
    presented_key,
    split_target,
    status_line,
    websocket_key_ok,
)
from .middleware import retry_after
from .router import Group
from .runtime import CompiledRoute
from .websocket import start_tunnel

_TOKENS_KEPT = frozenset({b"keep-alive", b"close", b"upgrade"})
_NO_TOKENS: frozenset[bytes] = frozenset()
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})


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
    keep = keep and req.settled()
    head_only = req.method == "HEAD"
    response = error_response(status, message, ctx.rid, keep, extra + ctx.cors_lines, head_only)
    transport = req.conn.transport
    if transport is not None:
        transport.write(response)
    return keep


# (host, normalised path, query or None): the request target after checks
Target = tuple[bytes, bytes, bytes | None]


def _target(ctx: Forward) -> Target | str:
    """The checked target, or why the request is malformed (400)."""
    req = ctx.req
    url = req.url
    if url[:1] == b"/" and 35 not in url and not ctx.repeated and b"host" in ctx.hd:
        raw_path, sep, query = url.partition(b"?")  # origin-form, one Host: the common case
        target: Target = (ctx.hd[b"host"], raw_path, query if sep else None)
    else:
        hosts = len(ctx.all_values(b"host"))
        if hosts > 1:
            return "more than one Host header"
        target = split_target(url)
        if target[0]:  # RFC 9112 section 3.2.2: the target's authority replaces Host
            ctx.hd[b"host"] = target[0]
        elif hosts == 0 and req.version == "1.1":
            return "missing Host header"
        else:
            target = (ctx.hd.get(b"host", b""), target[1], target[2])
    path = target[1]
    if 37 in path or 92 in path or b"/." in path or b"//" in path:  # "%", "\\": not normal
        normal = normalise_path(path)
        if normal is None:
            return "invalid request path"
        return (target[0], normal, target[2])
    return target


def _serve(ctx: Forward) -> bool | None:
    """Answer the request, or start forwarding it (returns None: the Forward finishes it).

    Returns whether the client connection stays open.
    """
    gw = ctx.gw
    req = ctx.req
    keep = req.keep_alive and not gw.draining
    target = _target(ctx)
    if isinstance(target, str):
        return _refuse(ctx, False, 400, target)
    host, path, query = target
    hd = ctx.hd
    connection = hd.get(b"connection")
    if connection is None or (not ctx.repeated and connection.lower() in _PLAIN_CONNECTION):
        tokens = None  # no Connection header, or just keep-alive or close: the common case
    else:
        tokens = connection_tokens(ctx.all_values(b"connection"))
    upgrade = hd.get(b"upgrade") if tokens and b"upgrade" in tokens else None
    if upgrade is not None:
        keep = False  # an upgrade that is not tunnelled ends the connection
    router = gw.runtime.router
    match = router.match(
        host.split(b":", 1)[0].lower().decode("latin-1") if router.has_hosts else "",
        path.decode("latin-1"),
    )
    if match is None:
        return _refuse(ctx, keep, 404, "no route")
    group, params, rest_path = match
    route = _pick(ctx, group, keep)
    if not isinstance(route, CompiledRoute):
        return route
    consumed = _policies(ctx, route) if route.auth or route.limiter else None
    if isinstance(consumed, tuple):
        return _refuse(ctx, keep, *consumed)
    if route.rewrite is not None:
        upath = (route.rewrite.format(**params).rstrip("/") + rest_path or "/").encode("latin-1")
    elif route.strip_prefix:
        upath = (rest_path or "/").encode("latin-1")
    else:
        upath = path
    if query is not None:
        upath += b"?" + query
    head = _head(ctx, route, tokens, upath, consumed)
    if upgrade is not None and upgrade.lower() == b"websocket":
        return _websocket(ctx, route, head)
    return _forward(ctx, route, head, keep)


def _pick(ctx: Forward, group: Group[CompiledRoute], keep: bool) -> CompiledRoute | bool:
    """The route for the method, or the answer (a CORS preflight, a 405)."""
    req = ctx.req
    hd = ctx.hd
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
            keep = keep and req.settled()
            transport = req.conn.transport
            assert transport is not None
            transport.write(
                b"%bX-Request-ID: %b\r\n%bContent-Length: 0\r\n%b\r\n"
                % (
                    status_line(204),
                    ctx.rid.encode(),
                    lines,
                    b"" if keep else b"Connection: close\r\n",
                )
            )
            return keep
    route = group.pick(req.method)
    if route is None:
        ctx.route = group.any_method or next(iter(group.by_method.values()))
        allow = b"Allow: " + group.allow.encode() + b"\r\n"
        return _refuse(ctx, keep, 405, "method not allowed", allow)
    ctx.route = route
    if origin is not None and route.cors is not None:
        ctx.cors_lines = (route.cors.allow_origin(origin) or b"") + route.cors.response_tail
    return route


def _policies(ctx: Forward, route: CompiledRoute) -> bytes | tuple[int, str, bytes] | None:
    """Auth and rate limit: the consumed credential header's name (or None), or a refusal."""
    hd = ctx.hd
    consumed: bytes | None = None
    auth = route.auth
    if auth is not None:
        consumed = auth.header if auth.header in hd else b"authorization"
        presented = hd.get(consumed)
        if presented is not None and 32 in presented:  # "Bearer <key>"
            presented = presented_key(presented)
        code, ctx.key = auth.check(presented)
        if code == 401:
            challenge = b'WWW-Authenticate: ApiKey header="%b"\r\n' % auth.header
            return 401, "missing or invalid API key", challenge
        if code == 403:
            return 403, "API key not allowed on this route", b""
    limiter = route.limiter
    if limiter is not None:
        bucket = ctx.key if (limiter.by_key and ctx.key) else ctx.req.conn.client
        wait = limiter.take(bucket, time.monotonic())
        if wait:
            return 429, "rate limit exceeded", b"Retry-After: %d\r\n" % retry_after(wait)
    return consumed


def _trusted_forwarding(ctx: Forward, host_header: bytes) -> bytes:
    """X-Forwarded-*, X-Real-IP and Forwarded from a trusted proxy: kept and extended."""
    req = ctx.req
    hd = ctx.hd
    client = req.conn.client_b
    xff = b", ".join([*ctx.all_values(b"x-forwarded-for"), client])
    real_ip = hd.get(b"x-real-ip", client)
    proto = hd.get(b"x-forwarded-proto", b"http")
    fwd_host = hd.get(b"x-forwarded-host") or host_header
    lines = b"".join(b"Forwarded: %b\r\n" % v for v in ctx.all_values(b"forwarded"))
    lines += b"X-Forwarded-For: %b\r\nX-Real-IP: %b\r\nX-Forwarded-Proto: %b\r\n" % (
        xff,
        real_ip,
        proto,
    )
    if fwd_host:  # an HTTP/1.0 client may send no Host
        lines += b"X-Forwarded-Host: %b\r\n" % fwd_host
    return lines


def _head(
    ctx: Forward,
    route: CompiledRoute,
    tokens: frozenset[bytes] | None,
    upath: bytes,
    consumed: bytes | None,
) -> bytes:
    """The upstream request head without framing and Host (added per target).

    X-Forwarded-For, X-Real-IP and Forwarded are replaced unless the peer is trusted.
    """
    req = ctx.req
    conn = req.conn
    drop = route.request_drop
    if tokens or consumed is not None:
        drop = drop | (tokens - _TOKENS_KEPT if tokens else _NO_TOKENS)
        if consumed is not None:
            drop = drop | {consumed}
    rt = ctx.gw.runtime
    trusted = conn.trusted
    if trusted is None or trusted[0] is not rt:
        trusted = conn.trusted = (rt, rt.trusted_peers.trusts(conn.client))
    host_header = ctx.hd.get(b"host", b"")
    if trusted[1]:
        forwarding = _trusted_forwarding(ctx, host_header)
    elif host_header:
        forwarding = conn.forwarded_lines + b"X-Forwarded-Host: %b\r\n" % host_header
    else:
        forwarding = conn.forwarded_lines
    kept = [b"%b: %b\r\n" % (n, v) for n, v in req.headers if n.lower() not in drop]
    return b"%b %b HTTP/1.1\r\n%b%bX-Request-ID: %b\r\n%b" % (
        req.method.encode(),
        upath,
        b"".join(kept),
        forwarding,
        ctx.rid.encode(),
        route.request_add,
    )


def _forward(ctx: Forward, route: CompiledRoute, head: bytes, keep: bool) -> bool | None:
    req = ctx.req
    hd = ctx.hd
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
        transport = req.conn.transport
        assert transport is not None
        transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    head += framing
    rid_b = ctx.rid.encode()
    head_tail = b"X-Request-ID: %b\r\n%b%b\r\n" % (rid_b, ctx.cors_lines, route.response_add)
    ctx.forward(route, head, head_tail, hd.get(b"host", b""), keep, chunked_up)
    return None


def _websocket(ctx: Forward, route: CompiledRoute, head: bytes) -> bool | None:
    req = ctx.req
    if not route.websocket:
        return _refuse(ctx, False, 400, "WebSocket is not enabled on this route")
    if req.method != "GET" or not req.settled() or req.version != "1.1":
        return _refuse(ctx, False, 400, "a WebSocket handshake is a GET/1.1 without a body")
    if not websocket_key_ok(ctx.hd.get(b"sec-websocket-key")):
        return _refuse(ctx, False, 400, "invalid Sec-WebSocket-Key")
    start_tunnel(ctx, route, head + b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    return None
