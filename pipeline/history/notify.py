"""Build notifications: a Slack-compatible webhook (``{"text": ..., "attachments": [...]}``)
posted with retries. The webhook URL is a secret (Slack's carries its token in the path): it is
never logged nor put in an error message."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from pipeline.errors import PipelineError, UsageError
from pipeline.history.report import (
    HistoryEntry,
    human_duration,
    human_size,
    scan_cell,
    short_platform,
)

COLORS = {"success": "#2eb886", "failure": "#a30200"}


class NotifyError(PipelineError):
    """The webhook refused the notification or could not be reached."""


class _Transient(Exception):
    """A failure worth retrying: connection trouble, 429 or a 5xx."""


def payload(
    entry: HistoryEntry, *, project: str = "api-gateway", run_url: str = ""
) -> dict[str, Any]:
    """A Slack-compatible message for one build or publish."""
    verb = "succeeded" if entry.ok else "failed"
    icon = ":white_check_mark:" if entry.ok else ":x:"
    commit = entry.commit[:7] or "unknown commit"
    text = f"{icon} {project} {entry.kind} {verb} ({commit}"
    text += f", {entry.version})" if entry.version else ")"
    if run_url:
        text += f" <{run_url}|details>"
    fields: list[dict[str, Any]] = []
    if entry.tags:
        fields.append({"title": "Tags", "value": ", ".join(entry.tags[:6]), "short": False})
    if entry.steps:
        fields.append(
            {"title": "Duration", "value": human_duration(entry.duration_s), "short": True}
        )
    if entry.total_steps:
        fields.append(
            {
                "title": "Cached steps",
                "value": f"{entry.cached_steps}/{entry.total_steps}",
                "short": True,
            }
        )
    for platform, size in entry.sizes.items():
        fields.append(
            {"title": f"Size {short_platform(platform)}", "value": human_size(size), "short": True}
        )
    fields.append({"title": "Scan C/H/M/L", "value": scan_cell(entry.scan), "short": True})
    if entry.error:
        fields.append({"title": "Error", "value": entry.error, "short": False})
    return {
        "text": text,
        "attachments": [
            {
                "color": COLORS[entry.result],
                "fallback": text,
                "fields": fields,
            }
        ],
    }


def job_results(needs: str) -> dict[str, str]:
    """``{job: result}`` from the JSON of Actions' ``needs`` context (``toJSON(needs)``)."""
    try:
        data = json.loads(needs or "{}")
    except ValueError:
        raise UsageError(
            "--needs: not JSON", hint="pass ${{ toJSON(needs) }} through env"
        ) from None
    if not isinstance(data, dict):
        raise UsageError("--needs: expected a JSON object of jobs")
    return {
        str(job): str((value or {}).get("result", "unknown")) if isinstance(value, dict) else "?"
        for job, value in data.items()
    }


def workflow_payload(
    workflow: str,
    jobs: Mapping[str, str],
    *,
    project: str = "api-gateway",
    ref: str = "",
    run_url: str = "",
) -> dict[str, Any]:
    """A Slack-compatible message for a whole workflow run: failed when any job failed or was
    cancelled, with each job's result (jobs in name order: Actions' ``needs`` has none)."""
    jobs = dict(sorted(jobs.items()))
    failed = [job for job, result in jobs.items() if result in ("failure", "cancelled")]
    result = "failure" if failed or not jobs else "success"
    verb = f"failed in {', '.join(failed)}" if failed else "failed" if not jobs else "succeeded"
    icon = ":x:" if result == "failure" else ":white_check_mark:"
    text = f"{icon} {project} {workflow} {verb}"
    if ref:
        text += f" ({ref})"
    if run_url:
        text += f" <{run_url}|details>"
    fields = [{"title": job, "value": value, "short": True} for job, value in jobs.items()]
    return {
        "text": text,
        "attachments": [{"color": COLORS[result], "fallback": text, "fields": fields}],
    }


@dataclass(frozen=True)
class Sent:
    status: int
    attempts: int


def check_url(url: str) -> None:
    """Refuse anything but an http(s) URL with a host (without echoing it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UsageError(
            "the webhook URL is not an http(s) URL",
            hint="set NOTIFY_WEBHOOK_URL to e.g. a Slack incoming-webhook URL",
        )


def send(
    url: str,
    message: Mapping[str, Any],
    *,
    attempts: int = 4,
    wait_s: float = 1.0,
    timeout_s: float = 10.0,
) -> Sent:
    """POST ``message`` as JSON; connection errors, 429 and 5xx are retried with exponential
    backoff (``wait_s``, doubling, at most 30 s) up to ``attempts`` tries. Another 4xx fails at
    once. Errors name the host at most, never the URL."""
    check_url(url)
    host = urlsplit(url).hostname or "?"
    body = json.dumps(message).encode("utf-8")
    tries = 0

    def post() -> int:
        nonlocal tries
        tries += 1
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "api-gateway-pipeline"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                raise _Transient(f"HTTP {exc.code}") from None
            raise NotifyError(
                f"the webhook on {host} refused the notification (HTTP {exc.code})",
                hint="check NOTIFY_WEBHOOK_URL",
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Transient(str(reason)) from None

    retrying = Retrying(
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential(multiplier=wait_s, max=30),
        retry=retry_if_exception_type(_Transient),
        reraise=True,
    )
    try:
        status = retrying(post)
    except _Transient as exc:
        raise NotifyError(
            f"the webhook on {host} failed after {tries} attempt(s) ({exc})",
            hint="the build result stands; retry with `invoke report --notify`",
        ) from None
    return Sent(status=status, attempts=tries)
