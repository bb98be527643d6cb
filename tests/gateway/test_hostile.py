"""Hostile clients and upstreams (issue #13): every byte from either side is untrusted."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

from gateway_harness import KEY_ALICE, Gateway, Upstream, route, sha
from raw_http import RawUpstream, header_of, path_of, read_responses, status_of

Factory = Callable[..., Gateway]
KEYS = f'[api_keys]\nalice = "{sha(KEY_ALICE)}"\n'
AUTH = 'auth = { keys = ["alice"] }'


def _early_hints_then_ok(head: bytes) -> bytes:
    body = path_of(head)
    return (
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    )


def test_a_1xx_from_the_upstream_never_reaches_the_next_client(
    gateway_factory: Factory,
) -> None:
    up = RawUpstream(_early_hints_then_ok)
    gw = gateway_factory(route("hints", "/", [up.url]))
    for n in range(4):  # one pooled upstream connection, one client after another
        status, headers, body = gw.request("GET", f"/client-{n}")
        assert (status, body) == (200, f"/client-{n}".encode())
        assert "link" not in headers
    assert len(up.heads) == 4
    up.close()


def test_dot_segments_and_encoded_dots_are_resolved_before_routing(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    config = (
        KEYS
        + route("public", "/public", [upstream.url])
        + route("admin", "/admin", [upstream.url], AUTH)
        + route("posts", "/users/{id}/posts", [upstream.url], 'rewrite = "/v2/posts/{id}"')
    )
    gw = gateway_factory(config)
    for path in ("/public/../admin/x", "/public/%2e%2e/admin/x", "/users/a/posts/../../../admin"):
        assert gw.request("GET", path)[0] == 401, path
    status, _, body = gw.json("GET", "/public/./a//b/%7Euser?q=/../x")
    assert (status, body["path"]) == (200, "/public/a/b/~user?q=/../x")
    for path in ("/public/..%2Fadmin", "/public/%5C..%5Cadmin", "/../admin", "/public/%zz"):
        assert gw.request("GET", path)[0] == 400, path


def test_request_trailers_are_dropped_and_never_become_headers_of_the_next_request(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    config = (
        KEYS
        + route("public", "/public", [upstream.url])
        + route("admin", "/admin", [upstream.url], AUTH)
    )
    gw = gateway_factory(config)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(
            b"POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-API-Key: " + KEY_ALICE.encode() + b"\r\nX-Trailer: 1\r\n\r\n"
            b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        first, second = read_responses(s, 2)
    assert (status_of(first), status_of(second)) == (200, 401)
    assert b"x-trailer" not in first.lower()


def _ok(head: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_oversized_urls_and_header_blocks_get_414_and_431_and_the_connection_closes(
    gateway_factory: Factory,
) -> None:
    up = RawUpstream(_ok)
    gw = gateway_factory(route("echo", "/", [up.url]))
    cases = {
        414: b"GET /" + b"a" * 8_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        431: b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 1_000_000 + b"\r\n\r\n",
    }
    cases[1431] = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-H: 1\r\n" * 10_000 + b"\r\n"
    for expected, data in cases.items():
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            # closed while we were still sending: the answer is already there
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(data)
            (response,) = read_responses(s, 1)
        assert status_of(response) == expected % 1000, expected
        assert header_of(response, "Connection") == "close"
    headers = {f"X-H{i}": "1" for i in range(98)}  # with Host and Accept-Encoding: 100
    assert gw.request("GET", "/", headers=headers)[0] == 200
    headers["X-H98"] = "1"
    assert gw.request("GET", "/", headers=headers)[0] == 431
    assert len(up.heads) == 1
    up.close()


def _ws_script(head: bytes) -> bytes | None:
    return None  # 101 and echo


def _handshake(path: bytes, extra: bytes = b"") -> bytes:
    return (
        b"GET %b HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n%b\r\n"
        % (path, extra)
    )


def test_a_websocket_upgrade_is_tunnelled_on_a_websocket_route_and_refused_elsewhere(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    ws = RawUpstream(_ws_script)
    config = route("ws", "/ws", [ws.url], "websocket = true") + route("echo", "/", [upstream.url])
    gw = gateway_factory(config)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(_handshake(b"/ws/chat"))
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        assert head.startswith(b"HTTP/1.1 101 ")
        s.sendall(b"\x81\x05hello")
        echoed = b""
        while len(echoed) < 7:
            echoed += s.recv(65536)
        assert echoed == b"\x81\x05hello"
    sent = ws.heads[0].lower()
    assert b"upgrade: websocket" in sent
    assert b"sec-websocket-key: dghlihnhbxbszsbub25jzq==" in sent
    refused = {
        b"/elsewhere": _handshake(b"/elsewhere"),
        b"/ws with a body": _handshake(b"/ws", b"Content-Length: 5\r\n") + b"hello",
    }
    for what, data in refused.items():
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            s.sendall(data)
            (response,) = read_responses(s, 1)
        assert (what, status_of(response)) == (what, 400)
        assert header_of(response, "Connection") == "close"
    assert (len(ws.heads), upstream.requests) == (1, [])
    ws.close()


def test_refusals_of_a_body_less_get_keep_the_connection_for_pipelined_requests(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    config = (
        KEYS
        + route("admin", "/admin", [upstream.url], AUTH)
        + route("ro", "/ro", [upstream.url], 'methods = ["GET"]')
        + route("limited", "/limited", [upstream.url], "rate_limit = { rate = 0.001, burst = 1 }")
        + route("only-a-host", "/", [upstream.url], 'host = "api.example.com"')
    )
    gw = gateway_factory(config)
    requests = [b"/nothing-here", b"/admin", b"/limited", b"/limited", b"/ro"]
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"".join(b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % p for p in requests))
        s.sendall(b"DELETE /ro HTTP/1.1\r\nHost: x\r\n\r\n")
        responses = read_responses(s, 6)
    assert [status_of(r) for r in responses] == [404, 401, 200, 429, 200, 405]
    assert [header_of(r, "Connection") for r in responses] == [None] * 6


def test_the_credential_the_gateway_consumed_is_not_forwarded(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    config = (
        KEYS
        + route("admin", "/admin", [upstream.url], AUTH)
        + route("open", "/open", [upstream.url])
    )
    gw = gateway_factory(config)
    by_key = gw.json("GET", "/admin", headers={"X-API-Key": KEY_ALICE, "Authorization": "Basic x"})
    assert (by_key[0], by_key[2]["headers"].get("x-api-key")) == (200, None)
    assert by_key[2]["headers"]["authorization"] == "Basic x"  # not what the gateway used
    for scheme in ("Bearer", "bearer", "BEARER"):
        status, _, body = gw.json(
            "GET", "/admin", headers={"Authorization": f"{scheme} {KEY_ALICE}"}
        )
        assert (status, body["headers"].get("authorization")) == (200, None)
    status, _, body = gw.json("GET", "/open", headers={"Authorization": "Bearer theirs"})
    assert (status, body["headers"]["authorization"]) == (200, "Bearer theirs")


def test_secrets_in_the_query_string_are_redacted_in_the_access_log(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("echo", "/", [upstream.url]))
    status, _, body = gw.json("GET", "/x?token=SECRET1&page=2&API_KEY=SECRET2")
    assert (status, body["path"]) == (200, "/x?token=SECRET1&page=2&API_KEY=SECRET2")
    (line,) = gw.access_log()
    assert line["path"] == "/x?token=REDACTED&page=2&API_KEY=REDACTED"
    assert "SECRET" not in "".join(gw.stdout)


def test_admin_paths_on_the_public_port_go_to_the_routes(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    config = route("metrics", "/metrics", [upstream.url]) + route("x", "/x", [upstream.url])
    gw = gateway_factory(config)
    status, _, body = gw.json("GET", "/metrics")
    assert (status, body["path"]) == (200, "/metrics")
    assert gw.request("GET", "/healthz")[0] == 404
    assert gw.request("GET", "/readyz")[0] == 404
    assert gw.admin("GET", "/x")[0] == 404
    assert gw.admin("POST", "/healthz")[0] == 405


def test_a_slow_request_head_is_cut_at_the_header_timeout_with_408(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory("[server]\nheader_timeout = 0.5\n" + route("e", "/", [upstream.url]))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        started = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow")
        (response,) = read_responses(s, 1)
        waited = time.monotonic() - started
    assert status_of(response) == 408
    assert 0.4 < waited < 3.0
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as silent:
        started = time.monotonic()
        assert silent.recv(100) == b""  # closed without a response
        assert time.monotonic() - started < 3.0
    metric = f'gateway_connections_closed_total{{worker="{gw.pid}",reason="header_timeout"}} 2'
    assert metric in gw.admin("GET", "/metrics")[2].decode()


def test_connections_past_the_per_worker_cap_are_closed_at_once(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory("[server]\nmax_connections = 5\n" + route("e", "/", [upstream.url]))
    held = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(5)]
    time.sleep(0.2)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as extra:
        extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_responses(extra, 1) == []
    for s in held:
        s.close()
    time.sleep(0.2)
    assert gw.request("GET", "/")[0] == 200
    metric = f'gateway_connections_closed_total{{worker="{gw.pid}",reason="max_connections"}} 1'
    assert metric in gw.admin("GET", "/metrics")[2].decode()


def test_a_slow_client_body_gets_408_and_is_not_an_upstream_failure(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    extra = "max_fails = 1\ntimeout = { read = 0.5, total = 10 }"
    gw = gateway_factory(route("echo", "/", [upstream.url], "", extra))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        (response,) = read_responses(s, 1)
    assert status_of(response) == 408
    assert header_of(response, "Connection") == "close"
    text = gw.admin("GET", "/metrics")[2].decode()
    assert "gateway_upstream_errors_total{" not in text
    assert gw.request("GET", "/after")[0] == 200


def _named_in_connection(head: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nConnection: X-Other\r\n"
        b"X-Internal: secret\r\nX-Other: secret\r\nX-Public: yes\r\nContent-Length: 2\r\n\r\nok"
    )


def test_headers_named_in_the_upstreams_connection_header_do_not_reach_the_client(
    gateway_factory: Factory,
) -> None:
    up = RawUpstream(_named_in_connection)
    gw = gateway_factory(route("raw", "/", [up.url]))
    status, headers, body = gw.request("GET", "/")
    assert (status, body, headers["x-public"]) == (200, b"ok", "yes")
    assert ("x-internal" in headers, "x-other" in headers, "connection" in headers) == (
        False,
        False,
        False,
    )
    up.close()


def test_every_connection_header_of_a_request_is_honoured(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("echo", "/", [upstream.url]))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: X-Drop\r\n"
            b"X-Drop: 1\r\nX-Kept: 1\r\n\r\n"
        )
        (response,) = read_responses(s, 1)
    assert status_of(response) == 200
    assert b'"x-kept"' in response
    assert b'"x-drop"' not in response


def test_a_duplicate_host_is_refused_and_an_absolute_form_target_sets_the_host(
    gateway_factory: Factory, upstream_factory: Callable[[str], Upstream]
) -> None:
    a, b = upstream_factory("a"), upstream_factory("b")
    config = route("api", "/", [a.url], 'host = "api.example.com"') + route("rest", "/", [b.url])
    gw = gateway_factory(config)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(
            b"GET http://api.example.com/x HTTP/1.1\r\nHost: other.example.com\r\n\r\n"
            b"GET /x HTTP/1.1\r\nHost: api.example.com\r\nHost: other.example.com\r\n\r\n"
        )
        first, second = read_responses(s, 2)
    assert (status_of(first), header_of(first, "X-Upstream")) == (200, "a")
    assert b'"x-forwarded-host": "api.example.com"' in first
    assert (status_of(second), header_of(second, "Connection")) == (400, "close")
    assert b"more than one Host header" in second
