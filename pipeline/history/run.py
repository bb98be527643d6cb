"""``report`` and ``notify`` end to end: the history read, the report and charts written, the
step summary handed back, the webhook posted (``NOTIFY_WEBHOOK_URL``, optional)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Settings
from pipeline.errors import UsageError
from pipeline.github import report_to_github, run_url
from pipeline.history.notify import job_results, payload, send, workflow_payload
from pipeline.history.report import read_history, render_markdown, write_report
from pipeline.history.store import DEFAULT_PATH


@dataclass(frozen=True)
class ReportRequest:
    """The flags of ``report``."""

    last: int = 20
    history: str | None = None
    out: str | None = None
    notify: bool = False


def report_history(
    req: ReportRequest, *, root: Path, settings: Settings, environ: Mapping[str, str]
) -> list[str]:
    """Markdown and charts of the last builds (and the step summary in Actions); with
    ``notify``, the latest result posted. The lines to print."""
    webhook = environ.get("NOTIFY_WEBHOOK_URL", "")
    if req.notify and not webhook:
        raise UsageError("--notify: NOTIFY_WEBHOOK_URL is not set")
    path = (
        Path(req.history) if req.history else root / settings.path_or_name("history", DEFAULT_PATH)
    )
    data = read_history(path)
    result = write_report(data, req.last, Path(req.out) if req.out else root / "build" / "report")
    charts = ", ".join(p.name for p in result.charts if p.suffix == ".svg")
    text = render_markdown(data.last(req.last), skipped=data.skipped)
    report_to_github(environ, summary=text + f"\nCharts: {charts} (in build/report/)\n")
    lines = [f"report: {result.markdown}", *(f"chart: {chart}" for chart in result.charts)]
    if req.notify:
        latest = data.entries[-1]
        project = settings.title or "api-gateway"
        sent = send(webhook, payload(latest, project=project, run_url=run_url(environ)))
        lines.append(
            f"notified: {latest.result} of {latest.commit[:7] or '?'} ({sent.attempts} attempt(s))"
        )
    return lines


def notify_workflow(
    workflow: str | None, needs: str, *, settings: Settings, environ: Mapping[str, str]
) -> list[str]:
    """A workflow run's outcome, job by job, to ``NOTIFY_WEBHOOK_URL``; without the variable
    nothing is sent (said in one line). The lines to print."""
    name = workflow or environ.get("GITHUB_WORKFLOW", "") or "workflow"
    message = workflow_payload(
        name,
        job_results(needs),
        project=settings.title or "api-gateway",
        ref=environ.get("GITHUB_REF_NAME", ""),
        run_url=run_url(environ),
    )
    webhook = environ.get("NOTIFY_WEBHOOK_URL", "")
    if not webhook:
        return [message["text"], "notify: NOTIFY_WEBHOOK_URL is not set: nothing sent"]
    sent = send(webhook, message)
    return [message["text"], f"notified: {name} ({sent.attempts} attempt(s))"]
