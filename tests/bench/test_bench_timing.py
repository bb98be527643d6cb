"""pipeline.bench.timing: whole-process timing and the bytecode the tags bench checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline.bench.timing import (
    compile_bytecode,
    fresh_bytecode,
    median_ratio,
    time_in_turn,
    time_process,
)
from pipeline.errors import CommandError


def test_bytecode_is_fresh_only_after_compiling_and_until_the_source_changes(
    tmp_path: Path,
) -> None:
    source = tmp_path / "module.py"
    source.write_text("VALUE = 1\n")
    assert fresh_bytecode([source]) == (0, 1)
    assert compile_bytecode([tmp_path]) is True
    assert fresh_bytecode([source]) == (1, 1)
    source.write_text("VALUE = 22\n")  # another size: the cached bytecode is stale
    assert fresh_bytecode([source]) == (0, 1)


def test_a_source_that_does_not_compile_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    assert compile_bytecode([broken]) is False


def test_a_timed_command_runs_the_asked_number_of_times() -> None:
    timing = time_process([sys.executable, "-c", "pass"], runs=3, warmup=1)
    assert timing.runs == 3
    assert 0 < timing.best <= timing.median <= timing.worst


def test_a_failing_timed_command_is_an_error_with_its_stderr() -> None:
    with pytest.raises(CommandError, match="benchmarked command failed"):
        time_process([sys.executable, "-c", "raise SystemExit(3)"], runs=1, warmup=0)


def test_commands_timed_in_turn_run_round_by_round_and_compare_by_median_ratio(
    tmp_path: Path,
) -> None:
    log = tmp_path / "order"
    append = "import sys; open(sys.argv[1], 'a').write(sys.argv[2])"
    slow = [sys.executable, "-c", append + "; import time; time.sleep(0.05)", str(log), "s"]
    fast = [sys.executable, "-c", append, str(log), "f"]
    subject, floor = time_in_turn([slow, fast], runs=3, warmup=1)
    assert log.read_text() == "sfsfsfsf"
    assert (len(subject), len(floor)) == (3, 3)
    assert median_ratio(subject, floor) > 1
    assert median_ratio([2.0, 3.0, 9.0], [1.0, 2.0, 3.0]) == 2.0
