"""Config validation, route precedence and worker-count rules, in-process."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from gateway.config import ConfigError, parse
from gateway.router import Router
from gateway.server import available_cpus

BASE = '[[routes]]\npath = "/"\nupstream = { targets = ["http://up:8080"] }\n'


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(tomllib.loads(text))
    return str(info.value)


def test_a_valid_config_gets_its_defaults() -> None:
    config = parse(tomllib.loads(BASE))
    route = config.routes[0]
    assert (config.server.port, config.server.workers, config.server.access_log) == (8080, 0, True)
    assert (route.name, route.methods, route.upstream.targets[0].label) == ("route0", (), "up:8080")
    assert (route.upstream.timeout.connect, route.upstream.retries) == (5.0, 2)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[server]\nport = "80"\n', 'server.port: must be an integer >= 1, got "80"'),
        ("[server]\nport = 70000\n", "server.port: must be an integer <= 65535, got 70000"),
        ("[server]\nwat = 1\n", "server.wat: unknown key"),
        (
            '[api_keys]\nx = "abc"\n',
            'api_keys.x: must be a sha256 hex digest (64 lower-case hex digits), got "abc"',
        ),
    ],
)
def test_server_and_key_errors_name_the_key(extra: str, message: str) -> None:
    assert error_of(extra + BASE) == message


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (
            'path = "api"\nupstream = { targets = ["http://u:1"] }',
            'routes[0].path: must start with "/", got "api"',
        ),
        ('path = "/"', "routes[0].upstream: is required"),
        (
            'path = "/"\nupstream = { targets = [] }',
            "routes[0].upstream.targets: must be a non-empty list of URLs, got []",
        ),
        (
            'path = "/"\nupstream = { targets = ["https://u"] }',
            'routes[0].upstream.targets[0]: must be a URL like "http://host:port" '
            '(http only, no path, user, query or fragment), got "https://u"',
        ),
        (
            'path = "/"\nupstream = { targets = ["http://u:1"], timeout = { read = 0 } }',
            "routes[0].upstream.timeout.read: must be a positive number, got 0",
        ),
        (
            'path = "/"\nmethods = ["get"]\nupstream = { targets = ["http://u:1"] }',
            'routes[0].methods[0]: must be an upper-case HTTP method, got "get"',
        ),
        (
            'path = "/"\nauth = { keys = ["nobody"] }\nupstream = { targets = ["http://u:1"] }',
            'routes[0].auth.keys[0]: unknown API key "nobody" (define it under [api_keys])',
        ),
        (
            'path = "/"\nrate_limit = { burst = 3 }\nupstream = { targets = ["http://u:1"] }',
            "routes[0].rate_limit.rate: is required",
        ),
        (
            'path = "/a/{x"\nupstream = { targets = ["http://u:1"] }',
            'routes[0].path: has a bad parameter segment "{x" (use /{name}/)',
        ),
    ],
)
def test_route_errors_name_the_key_and_the_problem(route: str, message: str) -> None:
    assert error_of(f"[[routes]]\n{route}\n") == message


def test_routes_are_required() -> None:
    assert error_of("") == "routes: is required (at least one [[routes]] table)"


def test_the_most_specific_route_wins_whatever_the_order() -> None:
    router: Router[str] = Router(
        [
            ("/", None, (), "root"),
            ("/a/{id}", None, ("GET",), "param"),
            ("/a/b", None, (), "literal"),
        ]
    )
    assert router.match("", "/a/b/c") == (router.match("", "/a/b")[0], {}, "/c")  # type: ignore[index]
    assert router.match("", "/a/b")[0].any_method == "literal"  # type: ignore[index]
    group, params, rest = router.match("", "/a/7/x")  # type: ignore[misc]
    assert (group.pick("GET"), params, rest) == ("param", {"id": "7"}, "/x")
    assert group.pick("POST") is None
    assert group.allow == "GET, HEAD"
    assert router.match("", "/ab")[0].any_method == "root"  # type: ignore[index]


def test_the_worker_count_respects_the_cgroup_quota(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(str(tmp_path)) == cpus
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert available_cpus(str(tmp_path)) == min(cpus, 2)
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(str(tmp_path)) == 1
    assert available_cpus(str(tmp_path / "missing")) == cpus
