"""Load with wrk: its output read into figures, and the CPU a target and the load used."""

from __future__ import annotations

import os
import re
import resource
import subprocess
from pathlib import Path

from pipeline.bench.figures import Result

#: The key every target but nginx checks (the gateway routes behind API-key auth).
API_KEY = "bench-key"

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
