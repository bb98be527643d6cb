"""Throughput benchmark of the gateway against nginx and a plain Python proxy, with wrk.

Every target proxies to the same upstream (nginx returning a small fixed body when
nginx is installed, else a small uvloop/asyncio server) on 127.0.0.1:

* ``gateway-1w`` / ``gateway-2w``: ``python -m gateway`` with 1 and 2 workers, through a
  route with API-key auth, a (non-throttling) rate limit and metrics; access log off;
* ``nginx-proxy``: nginx as a reverse proxy with upstream keep-alive;
* ``python-granian`` (an ASGI app on granian forwarding through one aiohttp ClientSession)
  and ``python-aiohttp`` (aiohttp server and client): the plain Python proxies the gateway
  is measured against, when installed (dev group);
* ``floor-asyncio``: a featureless stdlib-asyncio forwarder (no X-Forwarded-*, request id,
  chunked bodies, auth or metrics): a floor on the cost of proxying in Python, not a product;
* ``gateway-container-1w`` (when an image is given): the same gateway and config in its
  container (``--network host``, read-only root), to compare with ``gateway-1w``.

Figures are printed, never asserted.  ``run()`` kills every process it started.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.bench.figures import Result, combine
from pipeline.bench.wrk import API_KEY, wrk
from pipeline.errors import PipelineError, UsageError

ROOT = Path(__file__).resolve().parents[2]  # the checkout: `python -m gateway` runs from it

API_KEY_SHA256 = hashlib.sha256(API_KEY.encode()).hexdigest()
BODY = "hello, world\n"
#: The Python programs the benchmark starts, as real files.
PROGRAMS = Path(__file__).resolve().parent / "programs"
MINIMAL_NOTE = "stdlib asyncio streams; minimal: no XFF/request id/chunked"


# -- processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 15.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                response.read()
                return
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


class Processes:
    """Processes started by the benchmark; all are stopped by ``stop_all``."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


def _nginx_conf(workdir: Path, server: str) -> Path:
    conf = workdir / f"nginx-{abs(hash(server))}.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            daemon off;
            master_process off;
            worker_processes 1;
            pid {workdir}/nginx-{abs(hash(server))}.pid;
            error_log {workdir}/nginx-error.log error;
            events {{ worker_connections 4096; }}
            http {{
              access_log off;
              client_body_temp_path {workdir}/body;
              proxy_temp_path {workdir}/proxy;
              fastcgi_temp_path {workdir}/fastcgi;
              uwsgi_temp_path {workdir}/uwsgi;
              scgi_temp_path {workdir}/scgi;
              keepalive_requests 1000000;
              {server}
            }}
            """
        )
    )
    return conf


def gateway_config(workdir: Path, port: int, upstream_port: int) -> Path:
    path = workdir / f"gateway-{port}.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [server]
            host = "127.0.0.1"
            port = {port}
            access_log = false

            [api_keys]
            bench = "{API_KEY_SHA256}"

            [[routes]]
            name = "bench"
            path = "/"
            upstream = {{ targets = ["http://127.0.0.1:{upstream_port}"] }}
            auth = {{ keys = ["bench"] }}
            rate_limit = {{ rate = 1e9, burst = 1000000000 }}
            """
        )
    )
    return path


# -- wrk -----------------------------------------------------------------------------


# -- the run ---------------------------------------------------------------------------


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        yield Path(tmp)


def run(
    seconds: float = 5,
    connections: int = 64,
    image: str | None = None,
    rounds: int = 1,
) -> list[Result]:
    """Benchmark every target for ``seconds`` each with ``connections`` connections; with
    ``image``, the gateway in that image too (same config, one worker, host network).
    ``rounds`` > 1 runs every target that many times, interleaved (1w, 2w, ... then again),
    and reports each target's median round: on a shared machine whose speed drifts, ratios
    of interleaved medians are far steadier than one pass."""
    if shutil.which("wrk") is None:
        raise PipelineError("wrk is not installed", hint="apt-get install -y wrk")
    if rounds < 1:
        raise UsageError(f"--rounds {rounds}: must be at least 1")
    passes = [_one_round(seconds, connections, image) for _ in range(rounds)]
    return combine(passes)


@dataclass(frozen=True)
class _Load:
    """One round's fixed parts: where it runs, the upstream's port, and the wrk load."""

    procs: Processes
    workdir: Path
    up_port: int
    seconds: float
    connections: int


def _one_round(seconds: float, connections: int, image: str | None) -> list[Result]:
    nginx = shutil.which("nginx")
    procs = Processes()
    results: list[Result] = []
    with _workdir() as workdir:
        try:
            load = _Load(procs, workdir, free_port(), seconds, connections)
            upstream, note = _start_upstream(load, nginx)
            for workers in (1, 2):
                results.append(_gateway(load, workers, note, upstream.pid))
            if image:
                results.append(
                    _container(procs, workdir, image, load.up_port, seconds, connections)
                )
            if nginx:
                results.append(_nginx_proxy(load, nginx))
            results += _python_proxies(load)
        finally:
            procs.stop_all()
    return results


def _start_upstream(load: _Load, nginx: str | None) -> tuple[subprocess.Popen[bytes], str]:
    """nginx returning a fixed body when it is installed, else the Python upstream."""
    if nginx:
        server = (
            f"server {{ listen 127.0.0.1:{load.up_port}; "
            f'location / {{ default_type text/plain; return 200 "{BODY.strip()}\\n"; }} }}'
        )
        conf = _nginx_conf(load.workdir, server)
        upstream = load.procs.start([nginx, "-c", str(conf), "-e", "stderr"])
        note = "upstream: nginx"
    else:
        argv = [sys.executable, str(PROGRAMS / "upstream.py"), str(load.up_port), BODY]
        upstream = load.procs.start(argv)
        note = "upstream: python"
    wait_http(f"http://127.0.0.1:{load.up_port}/")
    return upstream, note


def _gateway(load: _Load, workers: int, note: str, upstream_pid: int) -> Result:
    port = free_port()
    cfg = gateway_config(load.workdir, port, load.up_port)
    argv = [sys.executable, "-m", "gateway", "--config", str(cfg), "--workers", str(workers)]
    proc = load.procs.start(argv, cwd=ROOT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        url = f"http://127.0.0.1:{port}/"
        label = f"gateway-{workers}w"
        return wrk(label, url, load.seconds, load.connections, note, proc.pid, upstream_pid)
    finally:
        load.procs.stop(proc)


def _nginx_proxy(load: _Load, nginx: str) -> Result:
    port = free_port()
    server = (
        f"upstream up {{ server 127.0.0.1:{load.up_port}; keepalive 128; }} "
        f"server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://up; "
        'proxy_http_version 1.1; proxy_set_header Connection ""; } }'
    )
    proc = load.procs.start([nginx, "-c", str(_nginx_conf(load.workdir, server)), "-e", "stderr"])
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        url = f"http://127.0.0.1:{port}/"
        return wrk("nginx-proxy", url, load.seconds, load.connections, pid=proc.pid)
    finally:
        load.procs.stop(proc)


def _python_proxies(load: _Load) -> list[Result]:
    env = {**os.environ, "BENCH_UPSTREAM_PORT": str(load.up_port)}
    results = []
    for label, argv, note in _baselines(load.workdir, load.up_port):
        port = free_port()
        proc = load.procs.start([a.replace("{port}", str(port)) for a in argv], PROGRAMS, env)
        try:
            wait_http(f"http://127.0.0.1:{port}/")
            url = f"http://127.0.0.1:{port}/"
            results.append(wrk(label, url, load.seconds, load.connections, note, pid=proc.pid))
        finally:
            load.procs.stop(proc)
    return results


def _baselines(workdir: Path, up_port: int) -> list[tuple[str, list[str], str]]:
    """The plain Python proxies of the issue's yardstick that are installed, then the floor."""
    python = sys.executable
    found: list[tuple[str, list[str], str]] = []
    has_aiohttp = importlib.util.find_spec("aiohttp") is not None
    if has_aiohttp and importlib.util.find_spec("granian") is not None:
        argv = [python, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"]
        argv += ["--port", "{port}", "--workers", "1", "--loop", "uvloop", "--no-ws"]
        argv += ["--log-level", "error", "--no-access-log", "granian_proxy:app"]
        found.append(("python-granian", argv, "ASGI app on granian, one aiohttp ClientSession"))
    if has_aiohttp:
        argv = [python, str(PROGRAMS / "aiohttp_proxy.py"), "{port}", str(up_port)]
        found.append(("python-aiohttp", argv, "aiohttp server+client"))
    floor = [python, str(PROGRAMS / "asyncio_proxy.py"), "{port}", str(up_port)]
    found.append(("floor-asyncio", floor, MINIMAL_NOTE))
    return found


def _container(
    procs: Processes, workdir: Path, image: str, up_port: int, seconds: float, connections: int
) -> Result:
    """The gateway in its image, on the host network so no NAT sits in the path."""
    port = free_port()
    config = gateway_config(workdir, port, up_port)
    config.chmod(0o644)
    from pipeline import engine

    name = f"bench-gateway-{port}"
    engine.run_container(
        image,
        ["python", "-m", "gateway", "--config", "/etc/gateway/gateway.toml", "--workers", "1"],
        name=name,
        labels={"bench": name},
        network="host",
        read_only=True,
        tmpfs=["/tmp"],
        volumes=[(str(config), "/etc/gateway/gateway.toml", "ro")],
        pull="never",
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        return wrk("gateway-container-1w", f"http://127.0.0.1:{port}/", seconds, connections)
    finally:
        engine.remove_labelled(f"bench={name}")


@dataclass(frozen=True)
class GatewayBench:
    """The flags of ``bench.gateway``."""

    seconds: float = 5
    connections: int = 64
    container: bool = True
    rounds: int = 3


def bench_gateway(request: GatewayBench, record_path: Path) -> str:
    """``bench.gateway``: every target (the gateway in the recorded image too, unless told
    not to), as the table of figures and ratios."""
    from pipeline.bench.figures import format_table
    from pipeline.build.record import BuildRecord

    image = BuildRecord.read(record_path).reference if request.container else None
    results = run(request.seconds, request.connections, image, rounds=request.rounds)
    return format_table(results)
