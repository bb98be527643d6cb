"""Timing whole processes, for the ``bench.*`` tasks: figures printed, never asserted."""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import CommandError, UsageError
from pipeline.project import load_pyproject


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


def _run_once(argv: Sequence[str], cwd: Path | None, env: Mapping[str, str] | None) -> float:
    """Wall seconds of one run of ``argv``; a failure is an error with its stderr."""
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
            "benchmarked command failed", argv=argv, returncode=done.returncode, stderr=done.stderr
        )
    return elapsed


def _timing(samples: Sequence[float]) -> Timing:
    return Timing(len(samples), min(samples), statistics.median(samples), max(samples))


def time_process(
    argv: Sequence[str],
    *,
    runs: int = 10,
    warmup: int = 1,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Timing:
    """Wall time of ``argv`` as a whole process, ``runs`` times after ``warmup`` discarded runs."""
    samples = [_run_once(argv, cwd, env) for _ in range(warmup + runs)]
    return _timing(samples[warmup:])


def time_in_turn(
    commands: Sequence[Sequence[str]],
    *,
    runs: int = 10,
    warmup: int = 1,
    cwd: Path | None = None,
) -> list[list[float]]:
    """Each command once per round, in order, for ``warmup`` discarded rounds then ``runs``: a
    machine that speeds up or slows down part-way weighs on every command alike. One list of
    wall times per command."""
    rounds = [[_run_once(argv, cwd, None) for argv in commands] for _ in range(warmup + runs)]
    return [list(samples) for samples in zip(*rounds[warmup:], strict=True)]


def median_ratio(subject: Sequence[float], floor: Sequence[float]) -> float:
    """The median of the per-round ratios ``subject / floor``."""
    return statistics.median(a / b for a, b in zip(subject, floor, strict=True))


def fresh_bytecode(sources: Iterable[Path]) -> tuple[int, int]:
    """How many of ``sources`` have bytecode in ``__pycache__`` that ``import`` would use as is
    (not recompile from source), and how many sources there are."""
    fresh = total = 0
    for source in sources:
        total += 1
        try:
            header = Path(importlib.util.cache_from_source(str(source))).read_bytes()[:16]
            stat = source.stat()
        except OSError:
            continue
        if len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER:
            continue
        flags = int.from_bytes(header[4:8], "little")
        if flags == 0:  # timestamp-based: the source's mtime and size
            usable = header[8:16] == (
                (int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
                + (stat.st_size & 0xFFFFFFFF).to_bytes(4, "little")
            )
        elif flags & 0b10:  # hash-based, checked against the source
            usable = header[8:16] == importlib.util.source_hash(source.read_bytes())
        else:  # hash-based, unchecked
            usable = True
        fresh += usable
    return fresh, total


def compile_bytecode(paths: Iterable[Path]) -> bool:
    """Write bytecode for ``paths`` (files, or directories of them) the way
    ``uv sync --compile-bytecode`` does for dependencies; False if one does not compile."""
    import compileall

    ok = True
    for path in paths:
        if path.is_dir():
            ok = bool(compileall.compile_dir(path, quiet=1)) and ok
        else:
            ok = bool(compileall.compile_file(path, quiet=1)) and ok
    return ok


FLOOR = [sys.executable, "-c", "import invoke"]
FROZEN_FLOOR = [sys.executable, "-c", "import invoke, gc; gc.freeze()"]


def bench_tags(root: Path, runs: int, report: Callable[[str], None] = print) -> None:
    """``bench.tags``: ``invoke docker.tags --format json`` as a whole process, as this
    environment is; then with tasks.py and pipeline/ compiled first (Invoke never writes
    tasks.pyc) and the parsed pyproject.toml kept, in alternation with
    ``python -c "import invoke"``, the floor no task can go under, so both see the same machine."""
    argv = [sys.executable, "-m", "invoke", "-r", str(root), "docker.tags", "--format", "json"]
    label = "invoke docker.tags (whole process)"
    fresh, total = fresh_bytecode([root / "tasks.py", *sorted((root / "pipeline").rglob("*.py"))])
    writes = "PYTHONDONTWRITEBYTECODE set" if sys.flags.dont_write_bytecode else "writes pyc"
    timing = time_process(argv, runs=runs, cwd=root)
    report(
        timing.line(
            f"{label}, as this environment is ({writes}; "
            f"{fresh}/{total} of tasks.py and pipeline/ had fresh bytecode)"
        )
    )
    if not compile_bytecode([root / "tasks.py", root / "pipeline"]):
        raise UsageError("tasks.py or pipeline/ does not compile")
    load_pyproject(root / "pyproject.toml", write_cache=True)  # as a run that writes pyc keeps it
    subject, floor, frozen = time_in_turn([argv, FLOOR, FROZEN_FLOOR], runs=runs, cwd=root)
    report(_timing(subject).line(f"{label}, bytecode and parsed pyproject cached", target=0.3))
    report(_timing(floor).line('floor: python -c "import invoke", run in turn with it'))
    report(_timing(frozen).line(f"floor with tasks.py's gc.freeze(): {FROZEN_FLOOR[-1]!r}"))
    ratio = median_ratio(subject, floor)
    verdict = "met" if ratio <= 1.2 else "MISSED"
    report(
        f"docker.tags / floor: {ratio:.2f}x (median of {runs} rounds)  target <= 1.2x: {verdict}"
    )
    report(
        f"docker.tags / floor with gc.freeze(): {median_ratio(subject, frozen):.2f}x "
        "(the same exit for both: what the task itself costs over importing Invoke)"
    )
