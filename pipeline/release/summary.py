"""A publish run said three ways: the terminal's lines, the step summary's Markdown and
``$GITHUB_OUTPUT``'s values (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.github import report_to_github
from pipeline.release.steps import Summary


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


def github_report(summary: Summary, environ: Mapping[str, str]) -> None:
    """The run's step summary and outputs, through the one GitHub writer."""
    summary_file = environ.get("GITHUB_STEP_SUMMARY", "")
    report_to_github(environ, outputs=outputs(summary, summary_file), summary=markdown(summary))
