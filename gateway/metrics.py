"""Prometheus metrics kept in plain dicts and rendered in the text exposition format.

Each worker process keeps its own counters; every series carries a ``worker`` label
so that scrapes of different workers can be told apart and summed.
"""

from __future__ import annotations

import os
from bisect import bisect_left

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RouteStats:
    __slots__ = ("buckets", "count", "statuses", "total")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.count = 0
        self.total = 0.0


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self.routes: dict[str, RouteStats] = {}
        self.upstream_errors: dict[tuple[str, str, str], int] = {}
        self.in_flight = 0
        self.reloads: dict[str, int] = {"ok": 0, "rejected": 0}
        # client connections closed by the gateway's limits, by reason
        self.closed: dict[str, int] = {"max_connections": 0, "header_timeout": 0}
        self.worker = str(os.getpid())

    def stats(self, route: str) -> RouteStats:
        s = self.routes.get(route)
        if s is None:
            s = self.routes[route] = RouteStats()
        return s

    def observe(self, stats: RouteStats, status: int, seconds: float) -> None:
        st = stats.statuses
        st[status] = st.get(status, 0) + 1
        stats.buckets[bisect_left(BUCKETS, seconds)] += 1
        stats.count += 1
        stats.total += seconds

    def upstream_error(self, route: str, target: str, kind: str) -> None:
        key = (route, target, kind)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1

    def render(self) -> bytes:
        w = f'worker="{self.worker}"'
        out = [
            "# HELP gateway_requests_total Requests answered, by route and status code.",
            "# TYPE gateway_requests_total counter",
        ]
        for route, s in sorted(self.routes.items()):
            r = _esc(route)
            for status, n in sorted(s.statuses.items()):
                out.append(f'gateway_requests_total{{{w},route="{r}",status="{status}"}} {n}')
        out += [
            "# HELP gateway_request_duration_seconds Time from request head to response end.",
            "# TYPE gateway_request_duration_seconds histogram",
        ]
        for route, s in sorted(self.routes.items()):
            r = _esc(route)
            cumulative = 0
            for le, n in zip((*BUCKETS, "+Inf"), s.buckets, strict=True):
                cumulative += n
                labels = f'{w},route="{r}",le="{le}"'
                out.append(f"gateway_request_duration_seconds_bucket{{{labels}}} {cumulative}")
            out.append(f'gateway_request_duration_seconds_sum{{{w},route="{r}"}} {s.total:.6f}')
            out.append(f'gateway_request_duration_seconds_count{{{w},route="{r}"}} {s.count}')
        out += [
            "# HELP gateway_upstream_errors_total Failed upstream attempts by route, target, kind.",
            "# TYPE gateway_upstream_errors_total counter",
        ]
        for (route, target, kind), n in sorted(self.upstream_errors.items()):
            out.append(
                f'gateway_upstream_errors_total{{{w},route="{_esc(route)}",target="{_esc(target)}",'
                f'kind="{kind}"}} {n}'
            )
        out += [
            "# HELP gateway_requests_in_flight Requests being handled now.",
            "# TYPE gateway_requests_in_flight gauge",
            f"gateway_requests_in_flight{{{w}}} {self.in_flight}",
            "# HELP gateway_config_reloads_total Config reloads by result.",
            "# TYPE gateway_config_reloads_total counter",
        ]
        for result, n in sorted(self.reloads.items()):
            out.append(f'gateway_config_reloads_total{{{w},result="{result}"}} {n}')
        out += [
            "# HELP gateway_connections_closed_total Client connections closed by a limit.",
            "# TYPE gateway_connections_closed_total counter",
        ]
        for reason, n in sorted(self.closed.items()):
            out.append(f'gateway_connections_closed_total{{{w},reason="{reason}"}} {n}')
        return ("\n".join(out) + "\n").encode()
