"""bench.build's figure table: each figure from the measured builds, against its target (pure).
The figures are printed by ``invoke bench.build``, never asserted on a real machine."""

from __future__ import annotations

import math

from pipeline.bench.build import Builds, Figure, figures, ratio
from pipeline.build.record import BuildRecord

HOST = "linux/amd64"


def rec(seconds: float, size: int = 60_000_000, context: int = 0) -> BuildRecord:
    return BuildRecord(
        image="bench/gw",
        version="dev",
        tags=["dev"],
        platforms=[HOST],
        duration_s=seconds,
        sizes={HOST: size},
        extra={"context_bytes": context},
    )


def builds() -> Builds:
    return Builds(
        cold=rec(100.0, context=45_300),
        noops=[rec(2.0), rec(1.0), rec(3.0)],
        changes=[rec(9.0), rec(11.0), rec(10.0, size=55_000_000)],
        multi=rec(140.0),
        base_sizes={HOST: 45_000_000},
        healthy=[0.9, 0.7, 0.8],
        context_bytes=120_000,
    )


def test_every_figure_is_computed_from_the_builds() -> None:
    table = {f.name: f for f in figures(builds(), HOST)}
    assert list(table) == [
        "rebuild with nothing changed / cold build",
        "rebuild after a change in gateway/ / cold build",
        "amd64+arm64 build / amd64-only build (both cold)",
        "runtime image size minus base image size",
        "container start to healthy, median of 3",
        "build context sent",
    ]
    assert table["rebuild with nothing changed / cold build"].value == 0.02  # median 2.0 / 100
    assert table["rebuild after a change in gateway/ / cold build"].value == 0.10
    assert table["amd64+arm64 build / amd64-only build (both cold)"].value == 1.4
    assert table["runtime image size minus base image size"].value == 10.0  # the last change
    assert table["container start to healthy, median of 3"].value == 0.8
    assert table["build context sent"].value == 0.12
    assert "BuildKit sent 45.3 kB" in table["build context sent"].detail
    assert all(f.ok for f in table.values())


def test_a_figure_over_its_target_says_so_in_its_line() -> None:
    within = Figure("size", 12.0, 40, "MB", "compressed")
    over = Figure("ratio", 0.5, 0.2)
    assert within.ok and not over.ok
    assert within.line().endswith("12.00 MB  (target <= 40 MB) ok  [compressed]")
    assert over.line().endswith("0.500  (target <= 0.2) OVER TARGET")


def test_a_ratio_over_nothing_is_infinite_not_an_error() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert math.isinf(ratio(1.0, 0.0))
