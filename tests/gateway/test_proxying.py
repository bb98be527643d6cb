"""Routing, headers, auth, limits and upstream failure handling, through a real gateway."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable

import pytest
from gateway_harness import KEY_ALICE, KEY_BOB, Gateway, Upstream, route, sha

Factory = Callable[..., Gateway]


def test_a_get_is_proxied_with_forwarded_headers_and_a_generated_request_id(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("echo", "/", [upstream.url]))
    status, headers, body = gw.json("GET", "/hello?x=1", headers={"Host": "example.test:81"})
    assert status == 200
    rid = headers["x-request-id"]
    assert len(rid) >= 16
    assert body["path"] == "/hello?x=1"
    assert body["headers"]["x-request-id"] == rid
    assert body["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert body["headers"]["x-forwarded-proto"] == "http"
    assert body["headers"]["x-forwarded-host"] == "example.test:81"
    assert body["headers"]["host"] == f"127.0.0.1:{upstream.port}"


def test_an_incoming_request_id_is_kept_and_forwarded_for_is_extended_from_a_trusted_proxy(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    config = '[server]\ntrust_forwarded = true\ntrusted_proxies = ["127.0.0.0/8"]\n'
    gw = gateway_factory(config + route("echo", "/", [upstream.url]))
    status, headers, body = gw.json(
        "GET",
        "/",
        headers={
            "X-Request-ID": "abc-123",
            "X-Forwarded-For": "10.0.0.1",
            "X-Real-IP": "10.0.0.1",
            "Forwarded": "for=10.0.0.1",
        },
    )
    assert status == 200
    assert headers["x-request-id"] == "abc-123"
    sent = body["headers"]
    assert sent["x-request-id"] == "abc-123"
    assert sent["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert (sent["x-real-ip"], sent["forwarded"]) == ("10.0.0.1", "for=10.0.0.1")


def test_forwarding_headers_from_an_untrusted_peer_are_replaced_not_extended(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    config = '[server]\ntrust_forwarded = true\ntrusted_proxies = ["10.0.0.0/8"]\n'
    gw = gateway_factory(config + route("echo", "/", [upstream.url]))
    spoofed = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Real-IP": "6.6.6.6",
        "Forwarded": "for=6.6.6.6",
        "X-Forwarded-Proto": "https",
    }
    status, _, body = gw.json("GET", "/", headers=spoofed)
    sent = body["headers"]
    assert status == 200
    assert (sent["x-forwarded-for"], sent["x-real-ip"]) == ("127.0.0.1", "127.0.0.1")
    assert (sent["x-forwarded-proto"], "forwarded" in sent) == ("http", False)


def test_hop_by_hop_headers_are_removed_in_both_directions(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("echo", "/", [upstream.url]))
    status, headers, body = gw.json(
        "GET",
        "/",
        headers={
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "1",
            "Keep-Alive": "timeout=9",
            "TE": "trailers",
            "Proxy-Authorization": "Basic eA==",
            "X-Kept": "yes",
        },
    )
    assert status == 200
    sent = body["headers"]
    for name in ("x-drop-me", "keep-alive", "te", "proxy-authorization"):
        assert name not in sent
    assert sent["x-kept"] == "yes"
    assert "keep-alive" not in headers
    assert "proxy-authenticate" not in headers
    assert headers["x-upstream"] == "a"


def test_per_route_header_rules_add_and_remove_headers(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    extra = """
    request_headers = { add = { "X-Added" = "in" }, remove = ["Cookie"] }
    response_headers = { add = { "X-Frame-Options" = "DENY" }, remove = ["X-Secret-Internal"] }
    """
    gw = gateway_factory(route("echo", "/", [upstream.url], extra))
    status, headers, body = gw.json("GET", "/", headers={"Cookie": "a=b"})
    assert status == 200
    assert body["headers"]["x-added"] == "in"
    assert "cookie" not in body["headers"]
    assert headers["x-frame-options"] == "DENY"
    assert "x-secret-internal" not in headers


def test_an_unknown_path_gets_a_json_404_and_a_wrong_method_a_json_405(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("api", "/api", [upstream.url], 'methods = ["GET", "POST"]'))
    status, headers, body = gw.json("GET", "/nowhere")
    assert (status, headers["content-type"]) == (404, "application/json")
    assert body == {"error": "no route", "status": 404, "request_id": headers["x-request-id"]}
    status, headers, body = gw.json("DELETE", "/api/x")
    assert status == 405
    assert headers["allow"] == "GET, HEAD, POST"
    assert body == {
        "error": "method not allowed",
        "status": 405,
        "request_id": headers["x-request-id"],
    }


def test_the_longest_match_wins_and_path_parameters_rewrite_the_upstream_path(
    gateway_factory: Factory, upstream_factory: Callable[[str], Upstream]
) -> None:
    a, b, c = upstream_factory("a"), upstream_factory("b"), upstream_factory("c")
    gw = gateway_factory(
        route("root", "/", [a.url])
        + route("api", "/api", [b.url], "strip_prefix = true")
        + route("posts", "/api/users/{id}/posts", [c.url], 'rewrite = "/v2/posts/{id}"')
    )
    assert gw.json("GET", "/apix")[2]["upstream"] == "a"
    _, _, body = gw.json("GET", "/api/things?q=1")
    assert (body["upstream"], body["path"]) == ("b", "/things?q=1")
    _, _, body = gw.json("GET", "/api/users/42/posts/7")
    assert (body["upstream"], body["path"]) == ("c", "/v2/posts/42/7")


def test_a_route_bound_to_a_host_only_matches_that_host(
    gateway_factory: Factory, upstream_factory: Callable[[str], Upstream]
) -> None:
    a, b = upstream_factory("a"), upstream_factory("b")
    gw = gateway_factory(
        route("any", "/", [a.url]) + route("h", "/", [b.url], 'host = "api.example.com"')
    )
    assert gw.json("GET", "/", headers={"Host": "api.example.com:8080"})[2]["upstream"] == "b"
    assert gw.json("GET", "/", headers={"Host": "other.example.com"})[2]["upstream"] == "a"


AUTH = f"""
[api_keys]
alice = "{sha(KEY_ALICE)}"
bob = "{sha(KEY_BOB)}"
"""


def test_api_keys_give_401_without_a_key_403_without_access_and_200_with_access(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(AUTH + route("api", "/", [upstream.url], 'auth = { keys = ["alice"] }'))
    status, _, body = gw.json("GET", "/")
    assert (status, body["error"]) == (401, "missing or invalid API key")
    assert gw.json("GET", "/", headers={"X-API-Key": "wrong"})[0] == 401
    status, _, body = gw.json("GET", "/", headers={"X-API-Key": KEY_BOB})
    assert (status, body["error"]) == (403, "API key not allowed on this route")
    assert gw.json("GET", "/", headers={"X-API-Key": KEY_ALICE})[0] == 200
    assert gw.json("GET", "/", headers={"Authorization": f"Bearer {KEY_ALICE}"})[0] == 200
    assert upstream.hits == {"/": 2}


def test_the_rate_limit_answers_429_with_retry_after_per_key(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    extra = 'auth = { keys = ["alice", "bob"] }\nrate_limit = { rate = 0.5, burst = 2 }'
    gw = gateway_factory(AUTH + route("api", "/", [upstream.url], extra))
    alice = {"X-API-Key": KEY_ALICE}
    assert [gw.request("GET", "/", headers=alice)[0] for _ in range(3)] == [200, 200, 429]
    status, headers, body = gw.json("GET", "/", headers=alice)
    assert (status, headers["retry-after"], body["error"]) == (429, "2", "rate limit exceeded")
    assert gw.request("GET", "/", headers={"X-API-Key": KEY_BOB})[0] == 200


def test_a_body_over_the_limit_gets_413(gateway_factory: Factory, upstream: Upstream) -> None:
    gw = gateway_factory(route("api", "/", [upstream.url], "max_body_size = 1000"))
    status, _, body = gw.json("POST", "/", body=b"x" * 1001)
    assert (status, body["error"]) == (413, "request body too large")
    # without a Content-Length (chunked), the limit applies while streaming
    conn = gw.connection()
    conn.request("POST", "/", body=iter([b"y" * 600, b"y" * 600]), encode_chunked=True)
    assert conn.getresponse().status == 413
    assert gw.json("POST", "/", body=b"x" * 1000)[2]["body_bytes"] == 1000
    assert upstream.hits == {"/": 1}


def test_chunked_bodies_are_streamed_in_both_directions(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("api", "/", [upstream.url]))
    conn = gw.connection()
    conn.request("POST", "/echo", body=iter([b"ab", b"cd", b"e"]), encode_chunked=True)
    body = json.loads(conn.getresponse().read())
    assert (body["body_bytes"], body["body_sha256"]) == (5, sha("abcde"))
    conn.request("GET", "/chunked")
    resp = conn.getresponse()
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert resp.read() == b"hello chunked world"


def test_an_http_10_client_gets_a_close_delimited_body(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("api", "/", [upstream.url]))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"GET /chunked HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in head
    assert body == b"hello chunked world"


def test_targets_are_used_round_robin(
    gateway_factory: Factory, upstream_factory: Callable[[str], Upstream]
) -> None:
    a, b = upstream_factory("a"), upstream_factory("b")
    gw = gateway_factory(route("api", "/", [a.url, b.url]))
    assert [gw.request("GET", "/")[1]["x-upstream"] for _ in range(4)] == ["a", "b", "a", "b"]


def test_a_503_is_retried_for_get_but_not_for_post(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("api", "/", [upstream.url]))
    assert gw.request("GET", "/flaky503?get")[0] == 200
    assert upstream.hits["/flaky503?get"] == 2
    assert gw.request("POST", "/flaky503?post", body=b"x")[0] == 503
    assert upstream.hits["/flaky503?post"] == 1


def test_a_failing_target_is_ejected_after_max_fails(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    gw = gateway_factory(
        route("api", "/", [dead, upstream.url], "", "max_fails = 2\nfail_timeout = 30")
    )
    statuses = [gw.request("POST", "/", body=b"x")[0] for _ in range(6)]
    assert statuses == [502, 200, 502, 200, 200, 200]


def test_a_get_to_a_dead_target_is_retried_on_the_next_one(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    gw = gateway_factory(route("api", "/", [dead, upstream.url]))
    assert [gw.request("GET", "/")[0] for _ in range(3)] == [200, 200, 200]


def test_active_health_checks_take_an_unhealthy_target_out(
    gateway_factory: Factory, upstream_factory: Callable[[str], Upstream]
) -> None:
    a, b = upstream_factory("a"), upstream_factory("b")
    a.unhealthy = True
    gw = gateway_factory(
        route("api", "/", [a.url, b.url], "", 'health_check = { path = "/health", interval = 0.2 }')
    )
    time.sleep(0.5)
    assert {gw.request("GET", "/")[1]["x-upstream"] for _ in range(4)} == {"b"}
    a.unhealthy = False
    time.sleep(0.6)
    assert {gw.request("GET", "/")[1]["x-upstream"] for _ in range(4)} == {"a", "b"}


def test_a_slow_upstream_gets_504_with_the_request_id(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("api", "/", [upstream.url], "", "timeout = { read = 0.5 }"))
    started = time.monotonic()
    status, headers, body = gw.json("GET", "/slow?s=3")
    assert time.monotonic() - started < 2
    assert status == 504
    assert body == {
        "error": "upstream timed out",
        "status": 504,
        "request_id": headers["x-request-id"],
    }


def test_an_upstream_dying_before_the_headers_gives_502_and_the_gateway_stays_up(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("api", "/", [upstream.url]))
    status, headers, body = gw.json("GET", "/die-before")
    assert status == 502
    assert body["request_id"] == headers["x-request-id"]
    assert "Traceback" not in json.dumps(body)
    assert gw.request("GET", "/ok")[0] == 200


def test_an_upstream_dying_mid_response_cuts_the_client_connection(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("api", "/", [upstream.url]))
    conn = gw.connection()
    conn.request("GET", "/die-mid")
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    assert gw.request("GET", "/ok")[0] == 200
    assert gw.proc.poll() is None


def test_cors_preflight_is_answered_by_the_gateway_and_responses_carry_the_origin(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    extra = """
    methods = ["GET", "POST"]
    [routes.cors]
    allow_origins = ["https://app.example"]
    allow_methods = ["GET", "POST"]
    allow_headers = ["X-API-Key"]
    max_age = 300
    """
    gw = gateway_factory(route("api", "/", [upstream.url], extra))
    status, headers, _ = gw.request(
        "OPTIONS",
        "/things",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert status == 204
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["access-control-allow-methods"] == "GET, POST"
    assert headers["access-control-allow-headers"] == "X-API-Key"
    assert headers["access-control-max-age"] == "300"
    assert upstream.hits == {}
    status, headers, _ = gw.request("GET", "/things", headers={"Origin": "https://app.example"})
    assert (status, headers["access-control-allow-origin"], headers["vary"]) == (
        200,
        "https://app.example",
        "Origin",
    )
    status, headers, _ = gw.request("GET", "/things", headers={"Origin": "https://evil.example"})
    assert status == 200
    assert "access-control-allow-origin" not in headers


def test_forwarded_proto_and_host_are_kept_only_when_trusted(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    incoming = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"}
    plain = gateway_factory(route("echo", "/", [upstream.url]))
    sent = plain.json("GET", "/", headers=incoming)[2]["headers"]
    assert (sent["x-forwarded-proto"], sent["x-forwarded-host"]) == (
        "http",
        f"127.0.0.1:{plain.port}",
    )
    trusted = gateway_factory(
        "[server]\ntrust_forwarded = true\n" + route("echo", "/", [upstream.url])
    )
    sent = trusted.json("GET", "/", headers=incoming)[2]["headers"]
    assert (sent["x-forwarded-proto"], sent["x-forwarded-host"]) == ("https", "public.example")


def test_a_head_request_gets_the_headers_without_a_body(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("echo", "/", [upstream.url]))
    status, headers, body = gw.request("HEAD", "/x")
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 0
    assert gw.request("GET", "/x")[0] == 200
