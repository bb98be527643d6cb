"""Build notifications: a Slack-compatible JSON webhook with retries, tested against a local
HTTP receiver that answers with a scripted list of status codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import UsageError
from pipeline.history.notify import NotifyError, job_results, payload, send, workflow_payload
from pipeline.history.report import HistoryEntry, append_history
from tests.conftest import ROOT, SECRET_PATH, Receiver


def _entry(result: str = "success", **kw: Any) -> HistoryEntry:
    data: dict[str, Any] = {
        "result": result,
        "when": "2026-11-29T17:00:00Z",
        "commit": "abc1234def" + "0" * 30,
        "version": "1.2.3",
        "tags": ("1.2.3", "1.2", "latest"),
        "steps": {"build": 80.0, "test": 12.0},
        "cached_steps": 9,
        "total_steps": 12,
        "sizes": {"linux/amd64": 52 * 2**20},
        "scan": {"CRITICAL": 0, "HIGH": 2, "MEDIUM": 0, "LOW": 3},
    }
    data.update(kw)
    return HistoryEntry(**data)


def test_a_success_reads_as_one_slack_message_with_the_builds_figures() -> None:
    message = payload(_entry(), run_url="https://github.com/acme/api-gateway/actions/runs/7")
    assert message == {
        "text": ":white_check_mark: api-gateway build succeeded (abc1234, 1.2.3)"
        " <https://github.com/acme/api-gateway/actions/runs/7|details>",
        "attachments": [
            {
                "color": "#2eb886",
                "fallback": ":white_check_mark: api-gateway build succeeded (abc1234, 1.2.3)"
                " <https://github.com/acme/api-gateway/actions/runs/7|details>",
                "fields": [
                    {"title": "Tags", "value": "1.2.3, 1.2, latest", "short": False},
                    {"title": "Duration", "value": "1m 32s", "short": True},
                    {"title": "Cached steps", "value": "9/12", "short": True},
                    {"title": "Size amd64", "value": "52.0 MiB", "short": True},
                    {"title": "Scan C/H/M/L", "value": "0/2/0/3", "short": True},
                ],
            }
        ],
    }


def test_a_failure_is_red_and_carries_its_error_and_an_unscanned_image_says_so() -> None:
    message = payload(_entry("failure", kind="publish", scan=None, error="push: 503"))
    assert message["text"] == ":x: api-gateway publish failed (abc1234, 1.2.3)"
    attachment = message["attachments"][0]
    assert attachment["color"] == "#a30200"
    assert attachment["fields"][-2:] == [
        {"title": "Scan C/H/M/L", "value": "not scanned", "short": True},
        {"title": "Error", "value": "push: 503", "short": False},
    ]


def test_the_message_is_posted_as_json_once_when_the_receiver_accepts(
    receiver: Receiver,
) -> None:
    sent = send(receiver.url, payload(_entry()), wait_s=0)
    assert (sent.status, sent.attempts) == (200, 1)
    assert receiver.bodies == [payload(_entry())]
    assert receiver.paths == [SECRET_PATH]
    assert receiver.content_types == ["application/json"]


def test_server_errors_and_rate_limits_are_retried_until_accepted(receiver: Receiver) -> None:
    receiver.statuses = [503, 429, 500]
    sent = send(receiver.url, {"text": "hi"}, attempts=4, wait_s=0)
    assert (sent.status, sent.attempts) == (200, 4)
    assert receiver.bodies == [{"text": "hi"}] * 4


def test_it_gives_up_after_the_last_attempt_without_revealing_the_url(
    receiver: Receiver,
) -> None:
    receiver.statuses = [502, 502, 502]
    with pytest.raises(NotifyError) as caught:
        send(receiver.url, {"text": "hi"}, attempts=3, wait_s=0)
    assert len(receiver.bodies) == 3
    line = caught.value.one_line()
    assert line == (
        "the webhook on 127.0.0.1 failed after 3 attempt(s) (HTTP 502): the build result"
        " stands; retry with `invoke report --notify`"
    )
    assert SECRET_PATH not in line


def test_a_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [404]
    with pytest.raises(NotifyError, match=r"refused the notification \(HTTP 404\)"):
        send(receiver.url, {"text": "hi"}, attempts=4, wait_s=0)
    assert len(receiver.bodies) == 1


def test_an_unreachable_webhook_is_retried_then_reported(receiver: Receiver) -> None:
    dead = f"http://127.0.0.1:9{SECRET_PATH}"  # the discard port: nothing listens there
    with pytest.raises(NotifyError, match=r"^the webhook on 127\.0\.0\.1 failed after 2 attempt"):
        send(dead, {"text": "hi"}, attempts=2, wait_s=0, timeout_s=2)
    assert receiver.bodies == []


@pytest.mark.parametrize("url", ["", "hooks.slack.com/services/x", "ftp://h/x", "https://"])
def test_a_webhook_url_that_is_not_http_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        send(url, {"text": "hi"})
    assert caught.value.one_line() == (
        "the webhook URL is not an http(s) URL: set NOTIFY_WEBHOOK_URL to e.g. a Slack"
        " incoming-webhook URL"
    )


def test_invoke_report_notify_posts_the_latest_result_and_never_prints_the_url(
    receiver: Receiver, tmp_path: Path
) -> None:
    history = tmp_path / "history.jsonl"
    append_history(history, _entry())
    append_history(history, _entry("failure", error="container test failed"))
    env = {
        **os.environ,
        "NOTIFY_WEBHOOK_URL": receiver.url,
        "GITHUB_RUN_ID": "42",
        "GITHUB_REPOSITORY": "acme/api-gateway",
        "GITHUB_SERVER_URL": "https://github.com",
    }
    env.pop("GITHUB_STEP_SUMMARY", None)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "invoke", "report", "--notify"),
            *("--history", str(history), "--out", str(tmp_path / "report")),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[-1] == "notified: failure of abc1234 (1 attempt(s))"
    assert SECRET_PATH not in done.stdout
    (body,) = receiver.bodies
    assert body["text"] == (
        ":x: api-gateway build failed (abc1234, 1.2.3)"
        " <https://github.com/acme/api-gateway/actions/runs/42|details>"
    )


# --- a whole workflow run (invoke notify, the workflows' notify jobs) ---

NEEDS = json.dumps(
    {
        "rescan": {"result": "failure", "outputs": {}},
        "outdated": {"result": "success", "outputs": {}},
        "prune": {"result": "skipped", "outputs": {}},
    }
)


def test_the_needs_context_gives_each_jobs_result() -> None:
    assert job_results(NEEDS) == {"rescan": "failure", "outdated": "success", "prune": "skipped"}
    assert job_results("") == {}


@pytest.mark.parametrize("needs", ["{not json", "[1, 2]"])
def test_needs_that_are_not_a_json_object_are_a_usage_error(needs: str) -> None:
    with pytest.raises(UsageError, match="--needs"):
        job_results(needs)


@pytest.mark.parametrize(
    ("jobs", "text", "color"),
    [
        (
            {"rescan": "failure", "outdated": "success"},
            ":x: api-gateway maintenance failed in rescan (main) <https://r/1|details>",
            "#a30200",
        ),
        (
            {"build": "success", "publish": "cancelled"},
            ":x: api-gateway maintenance failed in publish (main) <https://r/1|details>",
            "#a30200",
        ),
        (
            {"build": "success", "publish": "success"},
            ":white_check_mark: api-gateway maintenance succeeded (main) <https://r/1|details>",
            "#2eb886",
        ),
        ({}, ":x: api-gateway maintenance failed (main) <https://r/1|details>", "#a30200"),
    ],
)
def test_a_workflow_message_names_the_jobs_that_failed(
    jobs: dict[str, str], text: str, color: str
) -> None:
    message = workflow_payload("maintenance", jobs, ref="main", run_url="https://r/1")
    assert message["text"] == text
    (attachment,) = message["attachments"]
    assert attachment["color"] == color
    assert attachment["fields"] == [
        {"title": job, "value": result, "short": True} for job, result in sorted(jobs.items())
    ]


def _notify_task(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "NOTIFY_"))}
    return subprocess.run(
        [sys.executable, "-m", "invoke", "notify", *args],
        cwd=ROOT,
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_invoke_notify_posts_the_runs_outcome_and_never_prints_the_url(
    receiver: Receiver,
) -> None:
    env = {
        "NOTIFY_WEBHOOK_URL": receiver.url,
        "GITHUB_WORKFLOW": "maintenance",
        "GITHUB_REF_NAME": "main",
        "GITHUB_RUN_ID": "42",
        "GITHUB_REPOSITORY": "acme/api-gateway",
    }
    done = _notify_task(env, "--needs", NEEDS)
    text = (
        ":x: api-gateway maintenance failed in rescan (main)"
        " <https://github.com/acme/api-gateway/actions/runs/42|details>"
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [text, "notified: maintenance (1 attempt(s))"]
    (body,) = receiver.bodies
    assert body["text"] == text
    assert receiver.paths == [SECRET_PATH]


def test_invoke_notify_without_a_webhook_says_so_and_succeeds() -> None:
    done = _notify_task({}, "--workflow", "docker-build", "--needs", NEEDS)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[-1] == "notify: NOTIFY_WEBHOOK_URL is not set: nothing sent"


def test_invoke_notify_with_bad_needs_exits_2_in_one_line() -> None:
    done = _notify_task({}, "--needs", "{oops")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --needs: not JSON: pass ${{ toJSON(needs) }} through env"
    ]
