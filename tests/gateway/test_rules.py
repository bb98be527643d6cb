"""Pure logic, table-tested: path normalisation, targets, tokens, credentials, redaction,
response header filtering, the auth cache and the rate-limit table, config rules."""

from __future__ import annotations

import time
import tomllib

import pytest
from gateway_harness import ROOT, sha

from gateway.config import ConfigError, parse
from gateway.configmodel import Auth, RateLimit
from gateway.httpbits import (
    connection_tokens,
    filter_response_head,
    normalise_path,
    presented_key,
    redact_query,
    split_target,
)
from gateway.middleware import Authenticator, RateLimiter


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (b"/", b"/"),
        (b"/a/b?", b"/a/b?"),  # the query is split off before: "?" is just a byte here
        (b"/public/../admin/x", b"/admin/x"),
        (b"/public/%2e%2e/admin/x", b"/admin/x"),
        (b"/public/%2E%2E/admin/x", b"/admin/x"),
        (b"/users/a/posts/../../../admin", b"/admin"),
        (b"//a///b/", b"/a/b/"),
        (b"/a/./b/.", b"/a/b/"),
        (b"/a/b/..", b"/a/"),
        (b"/.", b"/"),
        (b"/%7euser/%e2%82%ac", b"/~user/%E2%82%AC"),
        (b"/a%20b", b"/a%20b"),
        (b"/..", None),
        (b"/a/../..", None),
        (b"/a%2Fb", None),
        (b"/a%2fb", None),
        (b"/a%5Cb", None),
        (b"/a\\b", None),
        (b"/a%00", None),
        (b"/a%zz", None),
        (b"/a%4", None),
        (b"a/b", None),
    ],
)
def test_paths_are_normalised_or_refused(raw: bytes, normal: bytes | None) -> None:
    assert normalise_path(raw) == normal


@pytest.mark.parametrize(
    ("target", "parts"),
    [
        (b"/p?x=1", (b"", b"/p", b"x=1")),
        (b"/p#frag", (b"", b"/p", None)),
        (b"http://Api.Example.com:81/x?y", (b"Api.Example.com:81", b"/x", b"y")),
        (b"HTTP://h", (b"h", b"/", None)),
        (b"http://h?q=1", (b"h", b"/", b"q=1")),
        (b"http://user@h/x", (b"h", b"/x", None)),
        (b"*", (b"", b"/", None)),
    ],
)
def test_request_targets_are_split_into_host_path_and_query(
    target: bytes, parts: tuple[bytes, bytes, bytes | None]
) -> None:
    assert split_target(target) == parts


def test_connection_tokens_come_from_every_connection_header() -> None:
    tokens = connection_tokens([b"keep-alive, X-A", b" x-b ,,", b"Upgrade"])
    assert tokens == {b"keep-alive", b"x-a", b"x-b", b"upgrade"}


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (b"k1", b"k1"),
        (b"Bearer k1", b"k1"),
        (b"bearer k1", b"k1"),
        (b"BEARER   k1 ", b"k1"),
        (b"Basic k1", b"Basic k1"),
    ],
)
def test_the_bearer_scheme_is_case_insensitive(value: bytes, key: bytes) -> None:
    assert presented_key(value) == key


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/x", "/x"),
        ("/x?page=2", "/x?page=2"),
        ("/x?token=s&page=2", "/x?token=REDACTED&page=2"),
        (
            "/x?Access_Token=s&api_key=t&password=u",
            "/x?Access_Token=REDACTED&api_key=REDACTED&password=REDACTED",
        ),
        ("/x?key", "/x?key"),
        ("/x?sig=a=b", "/x?sig=REDACTED"),
    ],
)
def test_secret_query_values_are_redacted(target: str, logged: str) -> None:
    assert redact_query(target) == logged


def test_response_headers_named_by_the_upstreams_connection_header_are_dropped() -> None:
    lines = [
        b"Connection: keep-alive, X-A",
        b"connection: X-B",
        b"X-A: 1",
        b"x-b: 2",
        b"X-C: 3",
        b" folded",
        b"Content-Length: 5",
    ]
    kept, length = filter_response_head(lines, frozenset({b"connection", b"content-length"}))
    assert (kept, length) == ([b"X-C: 3\r\n", b" folded\r\n"], b"5")


def test_the_auth_cache_is_bounded_and_never_holds_long_keys() -> None:
    auth = Authenticator(Auth(frozenset({"alice"})), (("alice", sha("k")),))
    for i in range(300):
        assert auth.check(b"%d" % i + b"x" * 1_000_000) == (401, None)
    assert len(auth.cache) == 0
    for i in range(5000):
        auth.check(b"bogus-%d" % i)
    assert len(auth.cache) == Authenticator.CACHE_SIZE
    assert auth.check(b"k") == (0, "alice")
    assert auth.check(b"bogus-0") == (401, None)


def test_the_rate_limit_table_is_o1_per_request_and_capped() -> None:
    limiter = RateLimiter(RateLimit(rate=1.0, burst=5, by="address"))
    now = time.monotonic()
    for i in range(150_000):  # past the cap, every bucket still refilling
        limiter.take(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", now)
    assert len(limiter.buckets) <= limiter.cap
    started = time.perf_counter()
    for i in range(2000):
        limiter.take(f"new-{i}", now)
    assert time.perf_counter() - started < 1.0  # 24 ms each before: 48 s; here ~5 ms
    assert limiter.take("new-1999", now) == 0.0
    for _ in range(3):
        limiter.take("new-1999", now)
    assert limiter.take("new-1999", now) == pytest.approx(1.0)


def test_full_buckets_expire_from_the_rate_limit_table() -> None:
    limiter = RateLimiter(RateLimit(rate=10.0, burst=10, by="address"))
    for i in range(1000):
        limiter.take(f"a{i}", 0.0)
    limiter.sweep(0.5)
    assert len(limiter.buckets) == 1000
    limiter.sweep(1.0)  # 10 tokens at 10/s: full again after one second
    assert len(limiter.buckets) == 0


BASE = '[[routes]]\npath = "/"\nupstream = { targets = ["http://up:8080"] }\n'


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(tomllib.loads(text))
    return str(info.value)


def _route(extra: str, target: str = "http://u:1", path: str = "/") -> str:
    return f'[[routes]]\npath = "{path}"\n{extra}\nupstream = {{ targets = ["{target}"] }}\n'


URL_RULE = 'must be a URL like "http://host:port" (http only, no path, user, query or fragment)'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            BASE + _route('methods = ["GET"]', path="/"),
            'routes[1].path: duplicate route: "/" is already served by route "route0" '
            "for the same host and methods",
        ),
        ("[server]\nport = 0\n" + BASE, "server.port: must be an integer >= 1, got 0"),
        ("[admin]\nport = 0\n" + BASE, "admin.port: must be an integer >= 1, got 0"),
        ("[admin]\nport = 8080\n" + BASE, "admin.port: must differ from server.port, got 8080"),
        (
            _route("", "http://user:pass@u:1"),
            f'routes[0].upstream.targets[0]: {URL_RULE}, got "http://user:pass@u:1"',
        ),
        (
            _route("", "http://u:1#frag"),
            f'routes[0].upstream.targets[0]: {URL_RULE}, got "http://u:1#frag"',
        ),
        (
            _route("", "http://u:1 "),
            f'routes[0].upstream.targets[0]: {URL_RULE}, got "http://u:1 "',
        ),
        (
            _route("", "http://u:1/?"),
            f'routes[0].upstream.targets[0]: {URL_RULE}, got "http://u:1/?"',
        ),
        (
            _route('request_headers = { add = { "X-A" = "a\\u0000b" } }'),
            "routes[0].request_headers.add.X-A: must be a single-line string without control "
            'characters, got "a\\u0000b"',
        ),
        (
            _route('cors = { allow_origins = ["https://a\\r\\nX-Evil: 1"] }'),
            "routes[0].cors.allow_origins[0]: must not have control characters or surrounding "
            'spaces, got "https://a\\r\\nX-Evil: 1"',
        ),
        (
            _route('cors = { allow_headers = ["X-A\\nX-B"] }'),
            "routes[0].cors.allow_headers[0]: must not have control characters or surrounding "
            'spaces, got "X-A\\nX-B"',
        ),
        (
            _route("", path="/a?b=1"),
            "routes[0].path: must be a plain path (no query, fragment, escapes or spaces), "
            'got "/a?b=1"',
        ),
        (
            _route("", path="/a/../b"),
            'routes[0].path: must not have "." or ".." segments, got "/a/../b"',
        ),
        (
            _route("rate_limit = { rate = inf }"),
            "routes[0].rate_limit.rate: must be a positive number, got inf",
        ),
        (
            _route("rate_limit = { rate = nan }"),
            "routes[0].rate_limit.rate: must be a positive number, got nan",
        ),
        (
            _route("rate_limit = { rate = 1e-320 }"),
            "routes[0].rate_limit.rate: must be between 1e-06 and 1e+06, got 1e-320",
        ),
        (
            '[[routes]]\npath = "/"\n'
            'upstream = { targets = ["http://u:1"], timeout = { read = 1e300 } }\n',
            "routes[0].upstream.timeout.read: must be between 0 and 1e+09, got 1e+300",
        ),
        ('[server]\n"a\\nb" = 1\n' + BASE, 'server."a\\nb": unknown key'),
        (
            '[server]\ntrusted_proxies = ["10.0.0.0/33"]\n' + BASE,
            'server.trusted_proxies[0]: must be an IP address or CIDR, got "10.0.0.0/33"',
        ),
    ],
)
def test_configs_that_are_wrong_are_refused_with_the_key_and_the_reason(
    text: str, message: str
) -> None:
    assert error_of(text) == message


def test_routes_on_one_path_with_distinct_methods_or_hosts_are_not_duplicates() -> None:
    text = (
        _route('methods = ["GET"]')
        + _route('methods = ["POST"]')
        + _route('host = "a.example"')
        + _route("", path="/x")
    )
    assert len(parse(tomllib.loads(text)).routes) == 4


def test_the_admin_listener_defaults_to_localhost_9901_and_the_sample_to_all_addresses() -> None:
    config = parse(tomllib.loads(BASE))
    assert (config.admin.host, config.admin.port) == ("127.0.0.1", 9901)
    with open(ROOT / "gateway" / "sample.toml", "rb") as f:
        sample = parse(tomllib.load(f))
    assert (sample.admin.host, sample.admin.port) == ("0.0.0.0", 9901)


def test_merged_configs_merge_tables_key_by_key_and_replace_everything_else() -> None:
    from gateway.config import merge

    base = {"server": {"port": 8080, "workers": 1}, "routes": [{"name": "a"}], "api_keys": {}}
    over = {"server": {"workers": 4}, "routes": [{"name": "b"}], "api_keys": {"web": "h"}}
    assert merge(base, over) == {
        "server": {"port": 8080, "workers": 4},
        "routes": [{"name": "b"}],
        "api_keys": {"web": "h"},
    }
