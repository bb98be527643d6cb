"""Property-based fuzzing (hypothesis): hostile request bytes and hostile configs.

Requests: whatever bytes a client sends, the gateway answers with no 5xx (the upstream
always answers 200), writes no traceback and keeps serving.  Configs: every document is
either accepted (and compiles for serving) or refused with one ``ConfigError`` line;
``--check`` exits 0 or 2 with exactly one line.  Example counts are bounded: seconds.
"""

from __future__ import annotations

import contextlib
import copy
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from gateway_harness import Gateway, read_all, route
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_http import RawUpstream

from gateway.__main__ import main
from gateway.config import ConfigError, load
from gateway.metrics import Metrics
from gateway.middleware import retry_after
from gateway.runtime import Runtime

Factory = Callable[..., Gateway]
FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- requests -------------------------------------------------------------------------

_SEGMENTS = st.sampled_from(
    ["a", "..", ".", "", "%2e%2e", "%2F", "%5c", "%zz", "%00", "%41", "~", "x" * 300, "\\", "?"]
)
_PATHS = st.lists(_SEGMENTS, max_size=6).map(lambda s: "/" + "/".join(s))
_TARGETS = st.one_of(
    _PATHS,
    _PATHS.map(lambda p: "http://api.example.com" + p),
    st.sampled_from(["*", "", "http://", "/a?token=x#frag", "//", "/" + "u" * 9000]),
    st.text(max_size=40),
).map(lambda t: t.encode("utf-8", "surrogateescape"))
_NAMES = st.one_of(
    st.sampled_from(
        [
            "Host",
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
            "Upgrade",
            "Expect",
            "X-API-Key",
            "Authorization",
            "X-Forwarded-For",
            "Forwarded",
            "Origin",
            "Sec-WebSocket-Key",
        ]
    ),
    st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True),
    st.text(max_size=10),
)
_VALUES = st.one_of(
    st.sampled_from(
        [
            "0",
            "5",
            "-1",
            "99999999999999999999",
            "chunked",
            "gzip, chunked",
            "close",
            "keep-alive, Upgrade",
            "websocket",
            "100-continue",
            "bearer k",
            "Bearer " + "k" * 5000,
            "dGhlIHNhbXBsZSBub25jZQ==",
            "https://a.example",
        ]
    ),
    st.text(max_size=30),
)
_HEADERS = st.lists(st.tuples(_NAMES, _VALUES), max_size=8)
_BODIES = st.one_of(
    st.just(b""),
    st.binary(max_size=64),
    st.sampled_from([b"5\r\nhello\r\n0\r\n\r\n", b"0\r\nX-API-Key: k\r\n\r\n", b"zz\r\n"]),
)


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "DELETE", "BREW", "get"]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x"]))
    head = b"%b %b %b\r\n" % (method.encode(), draw(_TARGETS), version.encode())
    for name, value in draw(_HEADERS):
        head += b"%b: %b\r\n" % (
            name.encode("utf-8", "surrogateescape"),
            value.encode("utf-8", "surrogateescape"),
        )
    data = head + b"\r\n" + draw(_BODIES)
    if draw(st.booleans()):  # sometimes a second, ordinary request behind it
        data += b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"
    return data if draw(st.integers(0, 9)) else draw(st.binary(max_size=200))


def _ok(head: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def test_no_request_bytes_make_the_gateway_answer_5xx_or_write_a_traceback(
    gateway_factory: Factory,
) -> None:
    up = RawUpstream(_ok)
    extra = (
        'auth = { keys = ["k"] }\nrate_limit = { rate = 1000.0 }\n'
        'cors = { allow_origins = ["https://a.example"] }'
    )
    keys = '[api_keys]\nk = "' + "0" * 64 + '"\n'
    config = (
        "[server]\nheader_timeout = 1.0\n"
        + keys
        + route("auth", "/a", [up.url], extra)
        + route("ws", "/ws", [up.url], "websocket = true")
        + route("rest", "/", [up.url], 'host = "api.example.com"')
        + route("any", "/", [up.url])
    )
    gw = gateway_factory(config)

    @FAST
    @given(raw_requests())
    def one(data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=3) as s:
            with contextlib.suppress(OSError):
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            answer = read_all(s)
        statuses = [int(m) for m in _STATUS.findall(answer)]
        assert all(s < 500 for s in statuses), (data, answer)

    one()
    time.sleep(0.2)
    assert gw.proc.poll() is None
    assert gw.request("GET", "/")[0] == 200
    errors = [line for line in gw.stderr if "Traceback" in line or "error" in line]
    assert errors == []
    up.close()


# -- configs --------------------------------------------------------------------------

_GOOD: dict[str, Any] = {
    "server": {"port": 8080, "workers": 1, "header_timeout": 10.0, "trusted_proxies": []},
    "admin": {"host": "127.0.0.1", "port": 9901},
    "api_keys": {"k": "0" * 64},
    "routes": [
        {
            "name": "r",
            "path": "/users/{id}",
            "rewrite": "/v2/{id}",
            "methods": ["GET"],
            "auth": {"keys": ["k"], "header": "X-API-Key"},
            "rate_limit": {"rate": 10.0, "burst": 5},
            "request_headers": {"add": {"X-A": "1"}, "remove": ["Cookie"]},
            "cors": {"allow_origins": ["https://a.example"], "allow_headers": ["X-A"]},
            "upstream": {
                "targets": ["http://u:1"],
                "timeout": {"connect": 1.0, "read": 2.0, "total": 3.0},
                "health_check": {"path": "/h", "interval": 1.0},
            },
        },
        {"path": "/", "websocket": True, "upstream": {"targets": "http://v:2"}},
    ],
}

_SPECIAL_NUMBERS = st.sampled_from(
    [0, 1, -1, 65536, 2**53 + 1, float("inf"), float("nan"), 1e-320, 1e-7, 1e300, -0.0, 0.001]
)
_LEAVES = st.one_of(
    _SPECIAL_NUMBERS,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["", " x", "http://a:b@u:1", "http://u:1#f", "http://u:0", "/a?b", "a\r\nb", "\x00", "*"]
    ),
    st.booleans(),
)
_VALUES_TOML = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _at(doc: Any, where: tuple[Any, ...]) -> Any:
    for step in where:
        doc = doc[step]
    return doc


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    """The good config with a few values replaced, removed or added."""
    doc = copy.deepcopy(_GOOD)
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        paths = [p for p in _paths(doc) if p]
        numbers = [p for p in paths if isinstance(_at(doc, p), int | float)]
        if len(numbers) > 0 and draw(st.booleans()):  # numbers are where overflows hide
            where = draw(st.sampled_from(numbers))
            parent = _at(doc, where[:-1])
            parent[where[-1]] = draw(_SPECIAL_NUMBERS)
            continue
        where = draw(st.sampled_from(paths))
        parent = doc
        for step in where[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if action == "remove" and isinstance(parent, dict):
            del parent[where[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["x", "port", "rate", "path", "keys"]))] = draw(
                _VALUES_TOML
            )
        else:
            parent[where[-1]] = draw(_VALUES_TOML)
    return doc


def _document(doc: dict[str, Any]) -> bytes | None:
    try:
        return tomli_w.dumps(doc).encode()
    except (TypeError, ValueError):
        return None  # not representable in TOML (e.g. a list of tables and values)


def _accepted_and_compiles_or_refused_in_one_line(
    path: Path, data: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    path.write_bytes(data)
    try:
        config = load(str(path))
    except ConfigError as e:
        assert "\n" not in str(e)
        config = None
    if config is not None:  # what --check accepts must serve (a SIGHUP compiles it)
        runtime = Runtime(config, Metrics(), workers=3)
        for r in runtime.routes:
            if r.limiter is not None:
                for _ in range(int(r.limiter.burst) + 2):
                    wait = r.limiter.take("c", 0.0)
                assert retry_after(wait) >= 1
    code = main(["--check", "--config", str(path)])
    out, err = capsys.readouterr()
    if config is None:
        assert (code, out, err.count("\n")) == (2, "", 1)
        assert err.startswith("gateway: config error: ")
    else:
        assert (code, err) == (0, "")


def test_every_config_is_accepted_and_compiles_or_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fuzz.toml"

    @settings(FAST, max_examples=300)
    @given(st.one_of(mutated_configs().map(_document), st.binary(max_size=200)))
    def one(data: bytes | None) -> None:
        if data is not None:
            _accepted_and_compiles_or_refused_in_one_line(path, data, capsys)

    one()


_NUMBER_PATHS = [p for p in _paths(_GOOD) if p and isinstance(_at(_GOOD, p), int | float)]


def test_every_number_in_the_config_survives_extreme_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "numbers.toml"

    @settings(FAST, max_examples=200)
    @given(st.sampled_from(_NUMBER_PATHS), _SPECIAL_NUMBERS)
    def one(where: tuple[Any, ...], value: float) -> None:
        doc = copy.deepcopy(_GOOD)
        _at(doc, where[:-1])[where[-1]] = value
        _accepted_and_compiles_or_refused_in_one_line(path, tomli_w.dumps(doc).encode(), capsys)

    one()
