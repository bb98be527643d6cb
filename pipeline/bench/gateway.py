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
import re
import resource
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

from pipeline.errors import PipelineError, UsageError

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
API_KEY_SHA256 = hashlib.sha256(API_KEY.encode()).hexdigest()
BODY = "hello, world\n"
#: The Python programs the benchmark starts, as real files.
PROGRAMS = Path(__file__).resolve().parent / "programs"
MINIMAL_NOTE = "stdlib asyncio streams; minimal: no XFF/request id/chunked"


@dataclass(frozen=True)
class Result:
    label: str
    url: str
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors plus non-2xx/3xx responses
    note: str = ""
    cpu_us_per_request: float = float("nan")  # CPU (user+sys) of the proxy's processes
    # CPU per request of what the proxy does not own: wrk, and the upstream server.
    load_us_per_request: float = float("nan")


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

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, errors) from ``wrk --latency`` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return (
        float(rps.group(1)) if rps else 0.0,
        _ms(p50.group(1)) if p50 else float("nan"),
        _ms(p99.group(1)) if p99 else float("nan"),
        errors,
    )


def _tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                pids.extend(_tree(int(child)))
    except OSError:
        pass
    return pids


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of ``pid`` and its descendants (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def wrk(
    label: str,
    url: str,
    seconds: float,
    connections: int,
    note: str = "",
    pid: int | None = None,
    upstream_pid: int | None = None,
) -> Result:
    """Run wrk against ``url``; with ``pid``, also the CPU that process tree used per request,
    and with ``upstream_pid`` the CPU per request of wrk plus the upstream (the load)."""
    argv = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-H",
        f"X-API-Key: {API_KEY}",
        url,
    ]
    cpu_before = cpu_seconds(pid) if pid else 0.0
    upstream_before = cpu_seconds(upstream_pid) if upstream_pid else 0.0
    wrk_before = _children_cpu()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
        output = done.stdout
    except subprocess.TimeoutExpired:
        return Result(label, url, 0.0, float("nan"), float("nan"), -1, "wrk timed out")
    cpu = cpu_seconds(pid) - cpu_before if pid else float("nan")
    load = _children_cpu() - wrk_before
    load += cpu_seconds(upstream_pid) - upstream_before if upstream_pid else float("nan")
    rps, p50, p99, errors = parse_wrk(output)
    total = re.search(r"(\d+) requests in", output)
    count = int(total.group(1)) if total else 0
    per_request = cpu / count * 1e6 if count and pid else float("nan")
    load_per_request = load / count * 1e6 if count else float("nan")
    return Result(label, url, rps, p50, p99, errors, note, per_request, load_per_request)


def _children_cpu() -> float:
    """User+system CPU seconds of the children this process has waited for (wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


def combine(passes: Sequence[Sequence[Result]]) -> list[Result]:
    """Each target's median over the passes, field by field (pure); the order of the first."""
    by_label: dict[str, list[Result]] = {}
    for results in passes:
        for r in results:
            by_label.setdefault(r.label, []).append(r)

    def median(values: Sequence[float]) -> float:
        real = sorted(v for v in values if v == v)
        if not real:
            return float("nan")
        mid = len(real) // 2
        return real[mid] if len(real) % 2 else (real[mid - 1] + real[mid]) / 2

    out: list[Result] = []
    for label, runs in by_label.items():
        first = runs[0]
        note = first.note if len(runs) == 1 else f"{first.note} (median of {len(runs)})".strip()
        out.append(
            Result(
                label,
                first.url,
                median([r.requests_per_sec for r in runs]),
                median([r.p50_ms for r in runs]),
                median([r.p99_ms for r in runs]),
                sum(r.errors for r in runs),
                note,
                median([r.cpu_us_per_request for r in runs]),
                median([r.load_us_per_request for r in runs]),
            )
        )
    return out


def _one_round(seconds: float, connections: int, image: str | None) -> list[Result]:
    nginx = shutil.which("nginx")
    procs = Processes()
    results: list[Result] = []
    python = sys.executable
    with _workdir() as workdir:
        try:
            up_port = free_port()
            if nginx:
                server = (
                    f"server {{ listen 127.0.0.1:{up_port}; "
                    f'location / {{ default_type text/plain; return 200 "{BODY.strip()}\\n"; }} }}'
                )
                upstream = procs.start(
                    [nginx, "-c", str(_nginx_conf(workdir, server)), "-e", "stderr"]
                )
                upstream_note = "upstream: nginx"
            else:
                upstream = procs.start([python, str(PROGRAMS / "upstream.py"), str(up_port), BODY])
                upstream_note = "upstream: python"
            wait_http(f"http://127.0.0.1:{up_port}/")

            for workers in (1, 2):
                port = free_port()
                cfg = gateway_config(workdir, port, up_port)
                argv = [python, "-m", "gateway", "--config", str(cfg), "--workers", str(workers)]
                proc = procs.start(argv, cwd=ROOT)
                wait_http(f"http://127.0.0.1:{port}/healthz")
                url = f"http://127.0.0.1:{port}/"
                results.append(
                    wrk(
                        f"gateway-{workers}w",
                        url,
                        seconds,
                        connections,
                        upstream_note,
                        proc.pid,
                        upstream.pid,
                    )
                )
                procs.stop(proc)

            if image:
                results.append(_container(procs, workdir, image, up_port, seconds, connections))

            if nginx:
                port = free_port()
                server = (
                    f"upstream up {{ server 127.0.0.1:{up_port}; keepalive 128; }} "
                    f"server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://up; "
                    'proxy_http_version 1.1; proxy_set_header Connection ""; } }'
                )
                proc = procs.start([nginx, "-c", str(_nginx_conf(workdir, server)), "-e", "stderr"])
                wait_http(f"http://127.0.0.1:{port}/")
                url = f"http://127.0.0.1:{port}/"
                results.append(wrk("nginx-proxy", url, seconds, connections, pid=proc.pid))
                procs.stop(proc)

            programs_env = {**os.environ, "BENCH_UPSTREAM_PORT": str(up_port)}
            for label, argv, note in _baselines(workdir, up_port):
                port = free_port()
                argv = [a.replace("{port}", str(port)) for a in argv]
                proc = procs.start(argv, cwd=PROGRAMS, env=programs_env)
                wait_http(f"http://127.0.0.1:{port}/")
                url = f"http://127.0.0.1:{port}/"
                results.append(wrk(label, url, seconds, connections, note, pid=proc.pid))
                procs.stop(proc)
        finally:
            procs.stop_all()
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


def _find(results: Sequence[Result], label: str) -> Result | None:
    return next((r for r in results if r.label == label and r.requests_per_sec > 0), None)


def scaling_ceiling(one: Result | None, cpus: int, workers: int = 2) -> float | None:
    """The best ``workers``/1 throughput ratio this machine allows, from the 1-worker run's
    CPU per request: the gateway's (g) and the load's, wrk plus upstream (n). A worker is
    one process, so it uses at most one CPU: T(w) = min(w / g, cpus / (g + n)). On 2 CPUs a
    fast gateway leaves little for a second worker: with n = g / 2 the ceiling is 1.33."""
    if one is None:
        return None
    g, n = one.cpu_us_per_request, one.load_us_per_request
    if not (g > 0 and n >= 0):  # NaN-safe: unmeasured is no figure
        return None

    def throughput(w: int) -> float:
        return min(w / g, cpus / (g + n))

    return throughput(workers) / throughput(1)


def cpu_ratio(a: Result | None, b: Result | None) -> float | None:
    """CPU per request of ``a`` over ``b``: 1.0 means a second worker costs nothing extra."""
    if a is None or b is None:
        return None
    value = a.cpu_us_per_request / b.cpu_us_per_request
    return value if value == value else None


def ratios(results: Sequence[Result], cpus: int | None = None) -> list[tuple[str, float | None]]:
    cpus = cpus or os.cpu_count() or 1
    g1 = _find(results, "gateway-1w")
    g2 = _find(results, "gateway-2w")
    ngx = _find(results, "nginx-proxy")
    pythons = [r for r in results if r.label.startswith("python-") and r.requests_per_sec > 0]
    best_py = max(pythons, key=lambda r: r.requests_per_sec) if pythons else None

    def ratio(a: Result | None, b: Result | None) -> float | None:
        return a.requests_per_sec / b.requests_per_sec if a and b else None

    out: list[tuple[str, float | None]] = [
        (f"gateway-1w / best python ({best_py.label if best_py else '-'})", ratio(g1, best_py)),
    ]
    for r in pythons:
        if r is not best_py:
            out.append((f"gateway-1w / {r.label}", ratio(g1, r)))
    floor = _find(results, "floor-asyncio")
    out += [
        ("gateway-1w / floor-asyncio (featureless)", ratio(g1, floor)),
        ("gateway-2w / gateway-1w", ratio(g2, g1)),
        (f"  ceiling of 2w / 1w on {cpus} CPUs, given the load's CPU", scaling_ceiling(g1, cpus)),
        ("  gateway CPU per request, 2w / 1w", cpu_ratio(g2, g1)),
        ("gateway-1w / nginx-proxy", ratio(g1, ngx)),
    ]
    container = _find(results, "gateway-container-1w")
    if container:
        out.append(("gateway-container-1w / gateway-1w", ratio(container, g1)))
    return out


def format_table(results: Sequence[Result], cpus: int | None = None) -> str:
    lines = [
        f"{'target':<22} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'cpu us/req':>10} {'load us/req':>11}  note"
    ]
    for r in results:
        lines.append(
            f"{r.label:<22} {r.requests_per_sec:>10.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.errors:>7} {r.cpu_us_per_request:>10.1f} {r.load_us_per_request:>11.1f}  {r.note}"
        )
    lines.append("")
    lines.append("cpu us/req: the proxy's processes; load us/req: wrk and the upstream")
    for name, value in ratios(results, cpus):
        lines.append(f"{name:<54} {'n/a' if value is None else f'{value:.2f}'}")
    return "\n".join(lines)
