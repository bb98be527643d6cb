"""Observability, streaming memory, lifecycle (drain, reload, workers) and the CLI."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from gateway_harness import ROOT, Gateway, Upstream, free_port, route, rss_kb

Factory = Callable[..., Gateway]


def test_healthz_readyz_and_metrics_are_served_on_the_admin_listener(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("echo", "/", [upstream.url]))
    assert gw.admin("GET", "/healthz")[::2] == (200, b'{"status":"ok"}')
    assert gw.admin("GET", "/readyz")[::2] == (200, b'{"status":"ready"}')
    for _ in range(3):
        gw.request("GET", "/x")
    gw.request("GET", "/status/500")
    status, headers, data = gw.admin("GET", "/metrics")
    text = data.decode()
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    w = f'worker="{gw.pid}"'
    assert f'gateway_requests_total{{{w},route="echo",status="200"}} 3' in text
    assert f'gateway_requests_total{{{w},route="echo",status="500"}} 1' in text
    assert f'gateway_request_duration_seconds_count{{{w},route="echo"}} 4' in text
    assert f'gateway_request_duration_seconds_bucket{{{w},route="echo",le="+Inf"}} 4' in text
    labels = f'{w},route="echo",target="127.0.0.1:{upstream.port}",kind="status_500"'
    assert f"gateway_upstream_errors_total{{{labels}}} 1" in text
    assert f"gateway_requests_in_flight{{{w}}} 0" in text  # admin requests are not counted
    assert "# TYPE gateway_request_duration_seconds histogram" in text


def test_every_request_writes_one_json_access_log_line(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("echo", "/", [upstream.url]))
    gw.request("GET", "/logged?q=1", headers={"X-Request-ID": "log-1", "User-Agent": "t/1"})
    gw.admin("GET", "/healthz")  # the admin listener does not log
    lines = gw.access_log()
    assert len(lines) == 1
    line = lines[0]
    assert {
        k: line[k]
        for k in ("request_id", "method", "path", "status", "route", "client", "user_agent")
    } == {
        "request_id": "log-1",
        "method": "GET",
        "path": "/logged?q=1",
        "status": 200,
        "route": "echo",
        "client": "127.0.0.1",
        "user_agent": "t/1",
    }
    assert line["upstream"] == f"127.0.0.1:{upstream.port}"
    assert line["duration_ms"] > 0


def test_the_access_log_can_be_switched_off(gateway_factory: Factory, upstream: Upstream) -> None:
    gw = gateway_factory("[server]\naccess_log = false\n" + route("echo", "/", [upstream.url]))
    gw.request("GET", "/")
    assert gw.access_log() == []


def _max_rss_while(pid: int, work: Callable[[], object]) -> tuple[int, object]:
    peak = [rss_kb(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return peak[0], result


def test_50_mb_bodies_stream_through_in_both_directions_without_growing_the_rss(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("big", "/", [upstream.url], "max_body_size = 0"))
    gw.request("GET", "/warm-up")
    before = rss_kb(gw.pid)
    size = 50 * 1024 * 1024
    block = b"u" * 65536

    def upload() -> object:
        conn = gw.connection(timeout=60)
        conn.request(
            "POST",
            "/upload",
            body=iter([block] * (size // len(block))),
            headers={"Content-Length": str(size)},
        )
        return conn.getresponse().read()

    def download() -> object:
        conn = gw.connection(timeout=60)
        conn.request("GET", f"/big?n={size}")
        resp = conn.getresponse()
        n = 0
        while chunk := resp.read(65536):
            n += len(chunk)
        return n

    peak_up, reply = _max_rss_while(gw.pid, upload)
    expected = hashlib.sha256(block * (size // len(block))).hexdigest()
    assert f'"body_bytes": {size}'.encode() in reply  # type: ignore[operator]
    assert expected.encode() in reply  # type: ignore[operator]
    peak_down, received = _max_rss_while(gw.pid, download)
    assert received == size
    assert peak_up - before < 20 * 1024
    assert peak_down - before < 20 * 1024


def test_sigterm_finishes_the_request_in_flight_and_exits_0(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("echo", "/", [upstream.url]))
    result: list[int] = []
    slow = threading.Thread(target=lambda: result.append(gw.request("GET", "/slow?s=1")[0]))
    slow.start()
    time.sleep(0.3)
    gw.signal(signal.SIGTERM)
    slow.join(5)
    assert result == [200]
    assert gw.proc.wait(timeout=5) == 0
    assert any('"draining"' in line for line in gw.stderr)


def test_sighup_reloads_a_good_config_and_keeps_the_old_one_when_the_new_is_bad(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("one", "/one", [upstream.url]))
    assert gw.request("GET", "/two")[0] == 404
    gw.config.write_text(
        route("one", "/one", [upstream.url]) + route("two", "/two", [upstream.url])
    )
    gw.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while gw.request("GET", "/two")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.request("GET", "/two")[0] == 200
    gw.config.write_text(route("one", "/one", ["ftp://nope"]))
    gw.signal(signal.SIGHUP)
    time.sleep(0.3)
    assert gw.request("GET", "/two")[0] == 200
    rejected = [line for line in gw.stderr if "reload rejected" in line]
    assert len(rejected) == 1
    assert "routes[0].upstream.targets[0]" in rejected[0]
    assert gw.proc.poll() is None


def test_two_workers_both_serve_and_stop_together(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("echo", "/", [upstream.url]), "--workers", "2")
    workers: set[str] = set()
    deadline = time.monotonic() + 10
    while len(workers) < 2 and time.monotonic() < deadline:
        _, _, data = gw.admin("GET", "/metrics")
        workers.update(re.findall(r'worker="(\d+)"', data.decode()))
    assert len(workers) == 2
    assert str(gw.pid) not in workers  # the supervisor only supervises
    assert gw.request("GET", "/x")[0] == 200
    assert gw.stop() == 0


def test_the_supervisor_restarts_a_crashed_worker(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("echo", "/", [upstream.url]), "--workers", "2")
    _, _, data = gw.admin("GET", "/metrics")
    victim = int(re.findall(r'worker="(\d+)"', data.decode())[0])
    subprocess.run(["kill", "-9", str(victim)], check=True)
    deadline = time.monotonic() + 10
    while not any("restarting" in line for line in gw.stderr) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(f'"worker_pid": {victim}' in line for line in gw.stderr if "restarting" in line)
    assert all(gw.request("GET", "/x")[0] == 200 for _ in range(10))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_a_bad_config_is_one_clear_error_with_exit_code_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        route("ok", "/", ["http://127.0.0.1:1"])
        + route("bad", "/b", ["http://127.0.0.1:1"], "", "timeout = { connect = -1 }")
    )
    done = _cli("--config", str(config), "--port", str(free_port()))
    assert done.returncode == 2
    assert done.stderr == (
        "gateway: config error: routes[1].upstream.timeout.connect: "
        "must be a positive number, got -1\n"
    )
    assert done.stdout == ""


def test_check_validates_a_config_and_exits_0_or_2(tmp_path: Path) -> None:
    assert _cli("--check", "--config", str(ROOT / "gateway" / "sample.toml")).returncode == 0
    config = tmp_path / "bad.toml"
    config.write_text(
        '[[routes]]\npath = "/"\nupstream = { targets = ["http://x:1"] }\nsurprise = 1\n'
    )
    done = _cli("--check", "--config", str(config))
    assert (done.returncode, done.stderr) == (
        2,
        "gateway: config error: routes[0].surprise: unknown key\n",
    )
    missing = _cli("--check", "--config", str(tmp_path / "missing.toml"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("gateway: config error: cannot read")


def test_the_healthcheck_module_exits_0_when_healthy_and_1_when_not(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("echo", "/", [upstream.url]))
    env = {**os.environ, "GATEWAY_ADMIN_PORT": str(gw.admin_port)}
    by_env = subprocess.run([sys.executable, "-m", "gateway.healthcheck"], cwd=ROOT, env=env)
    assert by_env.returncode == 0
    probe = [sys.executable, "-m", "gateway.healthcheck", "--port"]
    assert (
        subprocess.run([*probe, str(gw.admin_port)], cwd=ROOT, capture_output=True).returncode == 0
    )
    assert subprocess.run([*probe, str(free_port())], cwd=ROOT, capture_output=True).returncode == 1


def test_sighup_with_a_bad_config_never_kills_the_supervisor_of_two_workers(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("one", "/one", [upstream.url]), "--workers", "2")
    gw.config.write_text(
        route("one", "/one", [upstream.url], "rate_limit = { rate = inf }")
        + "\n[server]\nworkers = 2\n"
    )
    gw.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert gw.proc.poll() is None
    assert all(gw.request("GET", "/one")[0] == 200 for _ in range(6))
    rejected = [line for line in gw.stderr if "reload rejected" in line]
    assert len(rejected) == 1  # the supervisor's: the workers are not even signalled
    assert "routes[0].rate_limit.rate: must be a positive number, got inf" in rejected[0]
    assert not any("Traceback" in line for line in gw.stderr)
    assert gw.stop() == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            route("r", "/", ["http://u:1"], "rate_limit = { rate = inf }").encode(),
            "routes[0].rate_limit.rate: must be a positive number, got inf",
        ),
        (
            route("r", "/", ["http://u:1"], "rate_limit = { rate = 1e-320 }").encode(),
            "routes[0].rate_limit.rate: must be between 1e-06 and 1e+06, got 1e-320",
        ),
        (b'[[routes]]\npath = "/\xff"\n', "{path}: not UTF-8 text (byte 20)"),
        (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "{path}: invalid TOML: nested too deeply"),
    ],
)
def test_check_reports_a_bad_config_in_one_line_with_exit_2_never_a_traceback(
    tmp_path: Path, content: bytes, message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_bytes(content)
    done = _cli("--check", "--config", str(config))
    expected = "gateway: config error: " + message.format(path=config) + "\n"
    assert (done.returncode, done.stderr, done.stdout) == (2, expected, "")


def test_readyz_answers_503_on_the_admin_listener_while_the_gateway_drains(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("echo", "/", [upstream.url]))
    result: list[int] = []
    slow = threading.Thread(target=lambda: result.append(gw.request("GET", "/slow?s=1.5")[0]))
    slow.start()
    time.sleep(0.3)
    gw.signal(signal.SIGTERM)
    time.sleep(0.2)
    assert gw.admin("GET", "/readyz")[::2] == (503, b'{"status":"draining"}')
    assert gw.admin("GET", "/healthz")[0] == 200
    slow.join(5)
    assert result == [200]
    assert gw.proc.wait(timeout=5) == 0


def test_workers_never_outlive_a_killed_supervisor(
    gateway_factory: Factory, upstream: Upstream
) -> None:
    gw = gateway_factory(route("echo", "/", [upstream.url]), "--workers", "2")
    workers: set[int] = set()
    deadline = time.monotonic() + 10
    while len(workers) < 2 and time.monotonic() < deadline:
        _, _, data = gw.admin("GET", "/metrics")
        workers.update(int(w) for w in re.findall(r'worker="(\d+)"', data.decode()))
    assert len(workers) == 2
    gw.proc.kill()
    gw.proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [w for w in workers if Path(f"/proc/{w}").exists()]
    for w in left:  # never leave them behind, even when this fails
        os.kill(w, signal.SIGKILL)
    assert left == []


def test_several_configs_merge_in_order_so_key_hashes_can_come_from_a_secret(
    tmp_path: Path,
) -> None:
    """The Kubernetes shape: the ConfigMap's config names the keys its routes need, a file
    mounted from a Secret holds their hashes; --check and the server take the same list."""
    base = tmp_path / "gateway.toml"
    base.write_text(
        '[server]\nport = 8080\n[[routes]]\nname = "api"\npath = "/api"\n'
        'upstream = { targets = ["http://upstream:80"] }\nauth = { keys = ["web"] }\n'
    )
    keys = tmp_path / "api-keys.toml"
    keys.write_text(f'[api_keys]\nweb = "{hashlib.sha256(b"k").hexdigest()}"\n')
    alone = _cli("--check", "--config", str(base))
    assert (alone.returncode, alone.stderr) == (
        2,
        'gateway: config error: routes[0].auth.keys[0]: unknown API key "web" '
        "(define it under [api_keys])\n",
    )
    merged = _cli("--check", "--config", str(base), "--config", str(keys))
    assert (merged.returncode, merged.stdout) == (
        0,
        f"gateway: config OK: {base}, {keys} (1 routes)\n",
    )
