"""docker.publish: build, test, scan, push, sign in order, stopping at the first failure."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from faultproxy import cosign_keys, remove_images

from pipeline.errors import GateError, UsageError
from pipeline.publish import (
    Step,
    Summary,
    markdown,
    outputs,
    plan_steps,
    run,
    scan_text,
    should_push,
    text,
)
from pipeline.record import BuildRecord
from pipeline.registry import RegistryClient, parse_reference

ROOT = Path(__file__).resolve().parent.parent
DIGEST = "sha256:" + "d" * 64


@pytest.mark.parametrize(
    ("event", "requested", "expected"),
    [
        ("push", None, True),
        ("push", False, False),
        ("push", True, True),
        ("local", None, True),
        ("workflow_dispatch", None, True),
        ("pull_request", None, False),
        ("pull_request_target", False, False),
    ],
)
def test_pull_requests_never_push_and_everything_else_pushes_unless_told_not_to(
    event: str, requested: bool | None, expected: bool
) -> None:
    assert should_push(event, requested) is expected


def test_asking_a_pull_request_to_push_is_refused() -> None:
    with pytest.raises(UsageError, match="pull requests never push"):
        should_push("pull_request", True)


@pytest.mark.parametrize(
    ("push", "sign", "steps"),
    [
        (True, True, ("build", "test", "scan", "push", "sign")),
        (True, False, ("build", "test", "scan", "push")),
        (False, True, ("build", "test", "scan")),
    ],
)
def test_the_steps_run_in_order_and_sign_needs_push(
    push: bool, sign: bool, steps: tuple[str, ...]
) -> None:
    assert plan_steps(push, sign) == steps


class Recorder:
    def __init__(self, fail: str = "") -> None:
        self.ran: list[str] = []
        self.fail = fail

    def step(self, name: str, facts: Mapping[str, Any] | None = None) -> Step:
        def run_it() -> Mapping[str, Any]:
            self.ran.append(name)
            if name == self.fail:
                raise GateError(f"{name} failed: 2 HIGH")
            return facts or {}

        return Step(name, run_it)


def steps(rec: Recorder) -> list[Step]:
    return [
        rec.step("build", {"platforms": ["linux/amd64"], "version": "1.2.3"}),
        rec.step("test", {"detail": "9 checks passed"}),
        rec.step("scan", {"scan": "passed (no findings)"}),
        rec.step("push", {"digest": DIGEST, "tags": ["r:v1.2.3", "r:1.2"], "pushed": True}),
        rec.step("sign", {"signed": "verified (key)"}),
    ]


def ticking() -> Any:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.5
        return now[0]

    return clock


@pytest.mark.parametrize("failing", ["test", "scan"])
def test_if_test_or_scan_fails_nothing_is_pushed(failing: str) -> None:
    rec = Recorder(fail=failing)
    summary = run(steps(rec), Summary(image="r"), log=lambda _: None, clock=ticking())
    assert rec.ran == ["build", "test", "scan"][: ["build", "test", "scan"].index(failing) + 1]
    assert "push" not in rec.ran and "sign" not in rec.ran
    assert isinstance(summary.failure, GateError)
    assert summary.pushed is False and summary.digest == ""
    states = {s.name: s.status for s in summary.steps}
    assert states[failing] == "failed"
    assert states["push"] == "skipped" and states["sign"] == "skipped"


def test_a_full_publish_summarises_tags_digest_platforms_scan_and_durations() -> None:
    rec = Recorder()
    summary = run(steps(rec), Summary(image="r"), log=lambda _: None, clock=ticking())
    assert rec.ran == ["build", "test", "scan", "push", "sign"]
    assert summary.failure is None and summary.ok
    assert text(summary).splitlines() == [
        "version=1.2.3",
        f"digest={DIGEST}",
        "tags=r:v1.2.3,r:1.2",
        "platforms=linux/amd64",
        "pushed=true",
        "scan=passed (no findings)",
        "signed=verified (key)",
        "  build  ok 1.5s",
        "  test   ok 1.5s - 9 checks passed",
        "  scan   ok 1.5s",
        "  push   ok 1.5s",
        "  sign   ok 1.5s",
    ]
    md = markdown(summary)
    assert md.startswith("## r 1.2.3: published\n")
    assert f"| Digest | `{DIGEST}` |" in md
    assert "| Tags | `r:v1.2.3`<br>`r:1.2` |" in md
    assert "| test | ok: 9 checks passed | 1.5s |" in md
    assert outputs(summary, "/tmp/summary.md") == {
        "version": "1.2.3",
        "digest": DIGEST,
        "tags": "r:v1.2.3\nr:1.2",
        "platforms": "linux/amd64",
        "pushed": "true",
        "scan": "passed (no findings)",
        "signed": "verified (key)",
        "summary": "/tmp/summary.md",
    }


def test_a_failed_publish_says_so_in_the_step_summary() -> None:
    summary = run(steps(Recorder(fail="scan")), Summary(image="r"), log=lambda _: None)
    md = markdown(summary)
    assert md.startswith("## r 1.2.3: failed\n")
    assert "| scan | failed: scan failed: 2 HIGH |" in md
    assert "| push | skipped | - |" in md


def test_the_scan_line_never_calls_an_unscanned_image_clean() -> None:
    document = {
        "result": "failed",
        "counts": {"CRITICAL": 1, "HIGH": 2, "MEDIUM": 0},
        "states": {"vuln": "not scanned", "secret": "failed", "config": "passed"},
    }
    assert scan_text(document) == "failed (CRITICAL 1, HIGH 2; not scanned: vuln)"
    assert scan_text({"result": "passed", "counts": {"HIGH": 0}}) == "passed (no findings)"


# --- the real thing: the gateway's image, one platform, against the real registry ---


def publish_task(
    image: str, tmp_path: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "invoke", "docker.publish", "--platform", "linux/amd64"]
    argv += ["--no-arm64", "--no-db-update", "--ref", "main", "--sha", "6f3e8fa" + "0" * 33]
    return subprocess.run(
        [*argv, *args],
        cwd=ROOT,
        env={
            **os.environ,
            "INVOKE_DOCKER_IMAGE": image,
            "INVOKE_DOCKER_RECORD": str(tmp_path / "image.toml"),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture
def published(scratch_repo: str) -> Iterator[str]:
    yield scratch_repo
    remove_images(f"{scratch_repo}:latest", f"{scratch_repo}:main-6f3e8fa")


@pytest.mark.engine
@pytest.mark.slow
def test_publish_builds_tests_scans_pushes_and_signs_with_a_summary(
    published: str, tmp_path: Path, trivy_db: Path
) -> None:
    keys = cosign_keys(tmp_path / "keys")
    out, step_summary = tmp_path / "outputs", tmp_path / "summary.md"
    env = {
        **keys,
        "TRIVY_CACHE_DIR": str(trivy_db),
        "GITHUB_OUTPUT": str(out),
        "GITHUB_STEP_SUMMARY": str(step_summary),
    }
    done = publish_task(published, tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    lines = done.stdout.splitlines()
    digest = next(line for line in lines if line.startswith("digest="))[len("digest=") :]
    assert f"tags={published}:main-6f3e8fa,{published}:latest" in lines
    assert "pushed=true" in lines and "signed=verified (key)" in lines
    assert [line.split()[:2] for line in lines if line.startswith("  ")][-5:] == [
        ["build", "ok"],
        ["test", "ok"],
        ["scan", "ok"],
        ["push", "ok"],
        ["sign", "ok"],
    ]
    client = RegistryClient("127.0.0.1:5000")
    repo = parse_reference(published).repository
    assert client.digest(repo, "latest") == digest
    assert f"sha256-{digest[7:]}.sig" in client.tags(repo)
    assert f"digest={digest}\n" in out.read_text()
    assert step_summary.read_text().count(f"| Digest | `{digest}` |") == 1
    record = BuildRecord.read(tmp_path / "image.toml")
    assert record.pushed and record.digest == digest


@pytest.mark.engine
@pytest.mark.slow
def test_a_failed_scan_pushes_nothing(published: str, tmp_path: Path) -> None:
    empty = tmp_path / "no-db"
    empty.mkdir()
    done = publish_task(
        published, tmp_path, "--no-sign", "--require", "vuln", "--db-dir", str(empty)
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: image scan failed: vuln not scanned but required")
    assert done.stderr.count("\n") == 1
    assert "pushed=false" in done.stdout.splitlines()
    assert "  push   skipped" in done.stdout.splitlines()
    assert RegistryClient("127.0.0.1:5000").tags(parse_reference(published).repository) == []


@pytest.mark.engine
def test_publish_without_a_signing_key_refuses_before_building(
    published: str, tmp_path: Path
) -> None:
    env = {"COSIGN_KEY": "", "COSIGN_PUBLIC_KEY": "", "ACTIONS_ID_TOKEN_REQUEST_URL": ""}
    done = publish_task(published, tmp_path, env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("error: publishing signs the image, but no signing key is set")
    assert done.stdout == ""
    assert not (tmp_path / "image.toml").exists()
