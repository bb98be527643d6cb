"""``docker.publish``: build, test, scan, push, sign, in that order, stopping at the first
failure (if test or scan fails, nothing is pushed). The steps are callables wired at the edge;
this module runs them, times them and renders the summary (terminal, step summary, outputs).
"""

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


def run(
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


def text(summary: Summary) -> str:
    """The terminal summary; ``key=value`` lines first so scripts (and act tests) compare."""
    lines = [
        f"version={summary.version}",
        f"digest={summary.digest}",
        f"tags={','.join(summary.tags)}",
        f"platforms={','.join(summary.platforms)}",
        f"pushed={'true' if summary.pushed else 'false'}",
        f"scan={summary.scan}",
        f"signed={summary.signed}",
    ]
    for step in summary.steps:
        took = f" {step.duration_s:.1f}s" if step.status != "skipped" else ""
        detail = f" - {step.detail}" if step.detail else ""
        lines.append(f"  {step.name:<6} {step.status}{took}{detail}")
    return "\n".join(lines)


def markdown(summary: Summary) -> str:
    """The GitHub step summary."""
    status = "published" if summary.ok and summary.pushed else "built" if summary.ok else "failed"
    out = [f"## {summary.image or 'image'} {summary.version}: {status}", ""]
    out.append("| | |")
    out.append("|---|---|")
    out.append(f"| Digest | `{summary.digest or '-'}` |")
    out.append(f"| Platforms | {', '.join(summary.platforms) or '-'} |")
    out.append(f"| Scan | {_md(summary.scan) or '-'} |")
    out.append(f"| Signed | {_md(summary.signed) or '-'} |")
    out.append(f"| Tags | {'<br>'.join(f'`{t}`' for t in summary.tags) or '-'} |")
    out += ["", "| Step | Result | Duration |", "|---|---|---|"]
    for step in summary.steps:
        result = step.status + (f": {_md(step.detail)}" if step.detail else "")
        took = f"{step.duration_s:.1f}s" if step.status != "skipped" else "-"
        out.append(f"| {step.name} | {result} | {took} |")
    return "\n".join(out) + "\n"


def _md(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def scan_text(document: Mapping[str, Any]) -> str:
    """One line from a ``scan.json``: ``passed (CRITICAL 0, HIGH 2, ...)``; never "clean" when
    a scanner did not run."""
    result = str(document.get("result", "unknown"))
    counts = document.get("counts") or {}
    parts = [f"{k} {v}" for k, v in counts.items() if v] or ["no findings"]
    states = document.get("states") or {}
    skipped = sorted(k for k, v in states.items() if v == "not scanned")
    note = f"; not scanned: {', '.join(skipped)}" if skipped else ""
    return f"{result} ({', '.join(parts)}{note})"


def outputs(summary: Summary, summary_path: str = "") -> dict[str, str]:
    """Step outputs for ``$GITHUB_OUTPUT``."""
    return {
        "version": summary.version,
        "digest": summary.digest,
        "tags": "\n".join(summary.tags),
        "platforms": ",".join(summary.platforms),
        "pushed": "true" if summary.pushed else "false",
        "scan": summary.scan,
        "signed": summary.signed,
        "summary": summary_path,
    }
