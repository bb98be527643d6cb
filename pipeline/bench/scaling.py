"""``bench.gateway --workers 1,2,4,8``: how the gateway scales with workers, and the tail of one
saturated worker, on a machine with CPUs to spare for the load.

Each target proxies to one upstream (nginx returning a fixed body, else the Python upstream).
The proxy under test runs on CPUs of its own (``N`` workers on the first ``N`` of them); wrk
and the upstream run on the others, so the load never takes CPU from the proxy and a worker
count's figures are the proxy's alone. ``nginx-1w`` (one nginx worker, on the proxy's first
CPU) is the yardstick for one gateway worker.

Goals (printed beside each figure, never asserted): one worker's p99 at most 5x its p50 at the
given connections, one worker at least 0.4x one nginx worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.bench.figures import Result
from pipeline.errors import UsageError

#: Goals for one saturated worker (issue #13), printed beside the figures.
TAIL_GOAL = 5.0
NGINX_GOAL = 0.4


@dataclass(frozen=True)
class CpuPlan:
    """Which CPUs each side of the benchmark runs on (pure)."""

    proxy: tuple[int, ...]
    wrk: tuple[int, ...]
    upstream: tuple[int, ...]

    @property
    def shared(self) -> bool:
        """wrk and the upstream share CPUs (too few to give each its own)."""
        return bool(set(self.wrk) & set(self.upstream))


def plan_cpus(available: Sequence[int], max_workers: int, wrk_threads: int) -> CpuPlan:
    """The proxy gets the first ``max_workers`` CPUs; wrk the next ``wrk_threads``; the
    upstream the rest. With fewer CPUs than that, wrk and the upstream share what is left; with
    none left for them, a usage error."""
    cpus = sorted(available)
    if max_workers < 1:
        raise UsageError("--workers: each count must be at least 1")
    spare = cpus[max_workers:]
    if not spare:
        raise UsageError(
            f"--workers {max_workers} leaves no CPU for the load on this machine's {len(cpus)}",
            hint=f"use at most --workers {max(1, len(cpus) - 1)}, or a machine with more CPUs",
        )
    proxy = tuple(cpus[:max_workers])
    if len(spare) > wrk_threads:
        return CpuPlan(proxy, tuple(spare[:wrk_threads]), tuple(spare[wrk_threads:]))
    return CpuPlan(proxy, tuple(spare), tuple(spare))


def parse_workers(text: str) -> tuple[int, ...]:
    """``"1,2,4,8"`` as worker counts, ascending and without repeats; 1 is always measured
    (every ratio is against it)."""
    try:
        counts = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise UsageError(f"--workers {text!r}: expected counts like 1,2,4,8") from None
    if not counts or min(counts) < 1:
        raise UsageError(f"--workers {text!r}: expected counts like 1,2,4,8, each at least 1")
    return tuple(sorted(counts | {1}))


@dataclass(frozen=True)
class ScalingBench:
    """The flags of ``bench.gateway`` in its scaling mode."""

    workers: tuple[int, ...] = (1, 2, 4, 8)
    connections: int = 256
    seconds: float = 10
    rounds: int = 2
    threads: int = 4


def _ratio(a: Result | None, b: Result | None) -> float | None:
    if a is None or b is None or b.requests_per_sec <= 0:
        return None
    return a.requests_per_sec / b.requests_per_sec


def _tail(r: Result | None) -> float | None:
    if r is None or not r.p50_ms > 0 or r.p99_ms != r.p99_ms:
        return None
    return r.p99_ms / r.p50_ms


def scaling_ratios(results: Sequence[Result]) -> list[tuple[str, float | None, str]]:
    """(name, value, goal) rows: each worker count over one worker, one worker's p99/p50 and
    one worker over one nginx worker (pure)."""
    found = {r.label: r for r in results if r.requests_per_sec > 0}
    one = found.get("gateway-1w")
    rows: list[tuple[str, float | None, str]] = []
    for r in results:
        if r.label.startswith("gateway-") and r.label != "gateway-1w":
            rows.append((f"{r.label} / gateway-1w", _ratio(found.get(r.label), one), ""))
    rows.append(("gateway-1w p99 / p50", _tail(one), f"<= {TAIL_GOAL:g}"))
    rows.append(("nginx-1w p99 / p50", _tail(found.get("nginx-1w")), ""))
    rows.append(("gateway-1w / nginx-1w", _ratio(one, found.get("nginx-1w")), f">= {NGINX_GOAL}"))
    return rows


def format_scaling(results: Sequence[Result], plan: CpuPlan, request: ScalingBench) -> str:
    """The table ``bench.gateway --workers`` prints (pure)."""
    lines = [
        f"proxy on CPUs {_cpus(plan.proxy)}; wrk -t{request.threads} on {_cpus(plan.wrk)}; "
        f"upstream on {_cpus(plan.upstream)}{' (shared with wrk)' if plan.shared else ''}; "
        f"{request.connections} connections, {request.seconds:g} s a target, "
        f"median of {request.rounds} interleaved rounds",
        f"{'target':<14} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>8} {'errors':>7}"
        f" {'cpu us/req':>10}",
    ]
    for r in results:
        tail = _tail(r)
        lines.append(
            f"{r.label:<14} {r.requests_per_sec:>10.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{'n/a' if tail is None else f'{tail:.1f}':>8} {r.errors:>7}"
            f" {r.cpu_us_per_request:>10.1f}"
        )
    lines.append("")
    for name, value, goal in scaling_ratios(results):
        shown = "n/a" if value is None else f"{value:.2f}"
        lines.append(f"{name:<26} {shown:>8}  {('goal ' + goal) if goal else ''}".rstrip())
    return "\n".join(lines)


def _cpus(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)
