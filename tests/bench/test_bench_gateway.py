"""bench.gateway's pure parts: reading wrk, the ratios, and the scaling ceiling of a machine."""

from __future__ import annotations

import math

import pytest

from pipeline.bench.figures import Result, combine, cpu_ratio, format_table, scaling_ceiling
from pipeline.bench.wrk import parse_wrk

WRK = """\
Running 5s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.13ms    2.87ms  17.15ms   73.76%
    Req/Sec     4.52k   193.64     4.90k    80.00%
  Latency Distribution
     50%    6.60ms
     75%    8.81ms
     90%    9.91ms
     99%   12.70ms
  45120 requests in 5.01s, 7.17MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   9006.12
Transfer/sec:      1.43MB
"""


def result(label: str, rps: float, cpu: float, load: float = math.nan) -> Result:
    return Result(label, "http://127.0.0.1/", rps, 6.6, 12.7, 0, "", cpu, load)


def test_wrk_output_gives_throughput_median_tail_and_every_error() -> None:
    assert parse_wrk(WRK) == (9006.12, 6.6, 12.7, 7)


def test_a_wrk_run_that_printed_nothing_is_zero_throughput_not_a_crash() -> None:
    rps, p50, p99, errors = parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")
    assert (rps, errors) == (0.0, 0)
    assert math.isnan(p50) and math.isnan(p99)


@pytest.mark.parametrize(
    ("gateway_us", "load_us", "cpus", "ceiling"),
    [
        (100.0, 0.0, 2, 2.0),  # a free load generator: two workers, two CPUs
        (100.0, 50.0, 2, 2 * 100 / 150),  # the load takes a third of the machine
        (100.0, 100.0, 2, 1.0),  # one worker already fills both CPUs with the load
        (100.0, 100.0, 4, 2.0),  # enough CPUs: the second worker doubles throughput
        (300.0, 60.0, 2, 2 * 300 / 360),
    ],
)
def test_the_scaling_ceiling_is_what_the_cpus_left_by_the_load_allow(
    gateway_us: float, load_us: float, cpus: int, ceiling: float
) -> None:
    one = result("gateway-1w", 9000, gateway_us, load_us)
    assert scaling_ceiling(one, cpus) == pytest.approx(ceiling)


def test_no_ceiling_without_a_measured_load() -> None:
    assert scaling_ceiling(result("gateway-1w", 9000, 100.0), 2) is None
    assert scaling_ceiling(None, 2) is None


def test_cpu_per_request_of_two_workers_over_one() -> None:
    assert cpu_ratio(result("2w", 1, 110.0), result("1w", 1, 100.0)) == pytest.approx(1.1)
    assert cpu_ratio(result("2w", 1, math.nan), result("1w", 1, 100.0)) is None


def test_the_table_prints_every_ratio_with_the_ceiling_on_the_given_cpus() -> None:
    table = format_table(
        [
            result("gateway-1w", 9000, 100.0, 50.0),
            result("gateway-2w", 11000, 105.0, 52.0),
            result("nginx-proxy", 23000, 20.0),
            result("python-granian", 3000, 300.0),
        ],
        cpus=2,
    )
    figures = dict(line.rsplit(None, 1) for line in table.split("\n\n", 1)[1].splitlines()[1:])
    assert {name.strip(): value for name, value in figures.items()} == {
        "gateway-1w / best python (python-granian)": "3.00",
        "gateway-1w / floor-asyncio (featureless)": "n/a",
        "gateway-2w / gateway-1w": "1.22",
        "ceiling of 2w / 1w on 2 CPUs, given the load's CPU": "1.33",
        "gateway CPU per request, 2w / 1w": "1.05",
        "gateway-1w / nginx-proxy": "0.39",
    }


def test_rounds_combine_into_each_targets_median_in_first_pass_order() -> None:
    passes = [
        [result("gateway-1w", 9000, 100.0, 50.0), result("gateway-2w", 11000, 120.0, 60.0)],
        [result("gateway-1w", 7000, 130.0, 70.0), result("gateway-2w", 12000, 110.0, 55.0)],
        [result("gateway-1w", 8000, 90.0, math.nan), result("gateway-2w", 10000, 115.0, 58.0)],
    ]
    combined = combine(passes)
    assert [r.label for r in combined] == ["gateway-1w", "gateway-2w"]
    one, two = combined
    assert (one.requests_per_sec, one.cpu_us_per_request, one.load_us_per_request) == (
        8000,
        100.0,
        60.0,  # the median of the rounds that measured it
    )
    assert (two.requests_per_sec, two.cpu_us_per_request) == (11000, 115.0)
    assert one.note == "(median of 3)"
