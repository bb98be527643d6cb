"""The publish run as steps: which run (pull requests never push), in order, stopping at the
first failure, each timed, into one ``Summary`` (pure but for the steps it is given)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import PipelineError, UsageError

PULL_REQUEST_EVENTS = ("pull_request", "pull_request_target")

ORDER = ("build", "test", "scan", "push", "sign")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    """``run`` returns facts for the summary (e.g. ``{"digest": ...}``); raising stops the
    publish."""

    name: str
    run: Callable[[], Mapping[str, Any]]


@dataclass
class StepResult:
    name: str
    status: str  # ok, failed, skipped
    duration_s: float = 0.0
    detail: str = ""


@dataclass
class Summary:
    image: str = ""
    version: str = ""
    tags: list[str] = field(default_factory=list)
    digest: str = ""
    platforms: list[str] = field(default_factory=list)
    scan: str = ""
    signed: str = ""
    pushed: bool = False
    steps: list[StepResult] = field(default_factory=list)
    failure: PipelineError | None = None
    scan_counts: dict[str, int] | None = None  # for the history; None: not scanned

    @property
    def ok(self) -> bool:
        return self.failure is None and all(s.status != "failed" for s in self.steps)


def should_push(event: str, requested: bool | None) -> bool:
    """Pull request events never push; otherwise push unless ``--no-push``."""
    if event in PULL_REQUEST_EVENTS:
        if requested:
            raise UsageError(
                f"--push on a {event} event: pull requests never push",
                hint="drop --push, or publish from a branch or tag",
            )
        return False
    return True if requested is None else requested


def plan_steps(push: bool, sign: bool) -> tuple[str, ...]:
    """Which steps run: build, test and scan always; sign needs push."""
    steps = ["build", "test", "scan"]
    if push:
        steps.append("push")
        if sign:
            steps.append("sign")
    return tuple(steps)


def run_steps(
    steps: Sequence[Step],
    summary: Summary,
    *,
    log: Log = print,
    clock: Callable[[], float] = time.monotonic,
) -> Summary:
    """Run the steps in order; the first failure is recorded in ``summary.failure`` and the
    rest are skipped (the caller prints the summary, then raises it)."""
    failure: PipelineError | None = None
    for step in steps:
        if failure is not None:
            summary.steps.append(StepResult(step.name, "skipped"))
            continue
        log(f"==> {step.name}")
        started = clock()
        try:
            facts = dict(step.run())
        except PipelineError as exc:
            summary.steps.append(
                StepResult(step.name, "failed", round(clock() - started, 2), exc.one_line())
            )
            failure = exc
            continue
        duration = round(clock() - started, 2)
        _absorb(summary, facts)
        summary.steps.append(StepResult(step.name, "ok", duration, str(facts.get("detail", ""))))
    summary.failure = failure
    return summary


def _absorb(summary: Summary, facts: Mapping[str, Any]) -> None:
    for key in ("image", "version", "digest", "scan", "signed"):
        if facts.get(key):
            setattr(summary, key, str(facts[key]))
    if facts.get("tags"):
        summary.tags = [str(t) for t in facts["tags"]]
    if facts.get("platforms"):
        summary.platforms = [str(p) for p in facts["platforms"]]
    if "pushed" in facts:
        summary.pushed = bool(facts["pushed"])
