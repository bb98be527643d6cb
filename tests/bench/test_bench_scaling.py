"""bench.gateway --workers: the CPU plan, the worker counts, and the table it prints (pure)."""

from __future__ import annotations

import pytest

from pipeline.bench.figures import Result
from pipeline.bench.scaling import (
    CpuPlan,
    ScalingBench,
    format_scaling,
    parse_workers,
    plan_cpus,
    scaling_ratios,
)
from pipeline.errors import UsageError


@pytest.mark.parametrize(
    ("cpus", "workers", "threads", "plan"),
    [
        (range(16), 8, 4, CpuPlan((0, 1, 2, 3, 4, 5, 6, 7), (8, 9, 10, 11), (12, 13, 14, 15))),
        (range(16), 4, 4, CpuPlan((0, 1, 2, 3), (4, 5, 6, 7), tuple(range(8, 16)))),
        (range(12), 8, 4, CpuPlan(tuple(range(8)), (8, 9, 10, 11), (8, 9, 10, 11))),
        ([0, 1], 1, 4, CpuPlan((0,), (1,), (1,))),
        ([3, 1, 2, 0], 1, 2, CpuPlan((0,), (1, 2), (3,))),
    ],
)
def test_the_proxy_gets_cpus_of_its_own_and_the_load_the_others(
    cpus: range | list[int], workers: int, threads: int, plan: CpuPlan
) -> None:
    assert plan_cpus(list(cpus), workers, threads) == plan


def test_wrk_and_the_upstream_share_cpus_only_when_too_few_are_left() -> None:
    assert plan_cpus(range(16), 8, 4).shared is False
    assert plan_cpus(range(12), 8, 4).shared is True


def test_a_worker_count_that_leaves_no_cpu_for_the_load_is_refused_in_one_line() -> None:
    with pytest.raises(UsageError) as caught:
        plan_cpus([0, 1], 2, 4)
    assert caught.value.one_line() == (
        "--workers 2 leaves no CPU for the load on this machine's 2: "
        "use at most --workers 1, or a machine with more CPUs"
    )
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "counts"),
    [("1,2,4,8", (1, 2, 4, 8)), ("8,4", (1, 4, 8)), ("2, 2", (1, 2)), ("1", (1,))],
)
def test_worker_counts_are_sorted_once_each_and_always_include_one(
    text: str, counts: tuple[int, ...]
) -> None:
    assert parse_workers(text) == counts


@pytest.mark.parametrize("text", ["", "one", "0,2", "-1"])
def test_bad_worker_counts_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--workers"):
        parse_workers(text)


RESULTS = [
    Result("gateway-1w", "u", 15000, 10.0, 60.0, 0, cpu_us_per_request=60.0),
    Result("gateway-2w", "u", 36000, 5.0, 15.0, 0, cpu_us_per_request=55.0),
    Result("nginx-1w", "u", 60000, 4.0, 5.0, 0, cpu_us_per_request=15.0),
]


def test_the_ratios_are_each_count_over_one_worker_the_tail_and_nginx() -> None:
    assert scaling_ratios(RESULTS) == [
        ("gateway-2w / gateway-1w", 2.4, ""),
        ("gateway-1w p99 / p50", 6.0, "<= 5"),
        ("nginx-1w p99 / p50", 1.25, ""),
        ("gateway-1w / nginx-1w", 0.25, ">= 0.4"),
    ]


def test_a_target_that_served_nothing_gives_no_ratio() -> None:
    failed = [RESULTS[0], Result("nginx-1w", "u", 0.0, float("nan"), float("nan"), -1)]
    assert scaling_ratios(failed)[-2:] == [
        ("nginx-1w p99 / p50", None, ""),
        ("gateway-1w / nginx-1w", None, ">= 0.4"),
    ]


def test_the_table_says_where_each_side_ran_and_the_goals() -> None:
    plan = CpuPlan((0, 1), (2,), (3,))
    text = format_scaling(RESULTS, plan, ScalingBench((1, 2), 256, 10, 2, 1))
    assert text.splitlines() == [
        "proxy on CPUs 0,1; wrk -t1 on 2; upstream on 3; 256 connections, 10 s a target, "
        "median of 2 interleaved rounds",
        "target              req/s   p50 ms   p99 ms  p99/p50  errors cpu us/req",
        "gateway-1w          15000    10.00    60.00      6.0       0       60.0",
        "gateway-2w          36000     5.00    15.00      3.0       0       55.0",
        "nginx-1w            60000     4.00     5.00      1.2       0       15.0",
        "",
        "gateway-2w / gateway-1w        2.40",
        "gateway-1w p99 / p50           6.00  goal <= 5",
        "nginx-1w p99 / p50             1.25",
        "gateway-1w / nginx-1w          0.25  goal >= 0.4",
    ]
