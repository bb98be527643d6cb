"""The benchmark's figures: one ``Result`` per target, medians over rounds, and the table of
ratios ``bench.gateway`` prints (pure)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass


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
