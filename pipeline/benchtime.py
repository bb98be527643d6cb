"""Timing whole processes, for the ``bench.*`` tasks: figures printed, never asserted."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import CommandError


@dataclass(frozen=True)
class Timing:
    runs: int
    best: float
    median: float
    worst: float

    def line(self, label: str, target: float | None = None) -> str:
        verdict = ""
        if target is not None:
            verdict = f"  target <= {target:g}s: {'met' if self.median <= target else 'MISSED'}"
        return (
            f"{label}: median {self.median:.3f}s, best {self.best:.3f}s, "
            f"worst {self.worst:.3f}s over {self.runs} runs{verdict}"
        )


def time_process(
    argv: Sequence[str],
    *,
    runs: int = 10,
    warmup: int = 1,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Timing:
    """Wall time of ``argv`` as a whole process, ``runs`` times after ``warmup`` discarded runs."""
    samples: list[float] = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise CommandError(
                "benchmarked command failed",
                argv=argv,
                returncode=done.returncode,
                stderr=done.stderr,
            )
        if i >= warmup:
            samples.append(elapsed)
    return Timing(len(samples), min(samples), statistics.median(samples), max(samples))
