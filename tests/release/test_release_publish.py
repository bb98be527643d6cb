"""docker.publish: build, test, scan, push, sign in order, stopping at the first failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from faultproxy import cosign_keys, remove_images

from pipeline.build.record import BuildRecord
from pipeline.config import Settings
from pipeline.errors import GateError, UsageError
from pipeline.gitref import RefFlags
from pipeline.oci.reference import parse_reference
from pipeline.registry.client import RegistryClient
from pipeline.release.publish import PublishPlan, PublishRequest, StepFactory, publish
from pipeline.release.steps import Step, Summary, plan_steps, run_steps, should_push
from pipeline.release.summary import markdown, outputs, scan_text, text
from tests import fixtures_image

ROOT = Path(__file__).resolve().parents[2]
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
    summary = run_steps(steps(rec), Summary(image="r"), log=lambda _: None, clock=ticking())
    assert rec.ran == ["build", "test", "scan"][: ["build", "test", "scan"].index(failing) + 1]
    assert "push" not in rec.ran and "sign" not in rec.ran
    assert isinstance(summary.failure, GateError)
    assert summary.pushed is False and summary.digest == ""
    states = {s.name: s.status for s in summary.steps}
    assert states[failing] == "failed"
    assert states["push"] == "skipped" and states["sign"] == "skipped"


def test_a_full_publish_summarises_tags_digest_platforms_scan_and_durations() -> None:
    rec = Recorder()
    summary = run_steps(steps(rec), Summary(image="r"), log=lambda _: None, clock=ticking())
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
    summary = run_steps(steps(Recorder(fail="scan")), Summary(image="r"), log=lambda _: None)
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
            "INVOKE_DOCKER_HISTORY": str(tmp_path / "history.jsonl"),
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
    index = client.manifest(repo, digest)
    [attestation] = index.attestations()
    [statement] = client.manifest(repo, attestation).json()["layers"]
    provenance = json.loads(client.blob(repo, statement["digest"]))
    assert provenance["subject"][0]["digest"]["sha256"] == index.images()["linux/amd64"][7:]
    assert "buildConfig" in provenance["predicate"], "max mode records every build step"
    assert f"digest={digest}\n" in out.read_text()
    assert step_summary.read_text().count(f"| Digest | `{digest}` |") == 1
    record = BuildRecord.read(tmp_path / "image.toml")
    assert record.pushed and record.digest == digest
    [entry] = history_lines(tmp_path)
    assert (entry["result"], entry["kind"], entry["error"]) == ("success", "publish", "")
    assert list(entry["steps"]) == ["build", "test", "scan", "push", "sign"]


@pytest.mark.engine
@pytest.mark.slow
def test_publish_from_a_subfolder_scans_the_image_it_just_built(
    scratch_repo: str, tmp_path: Path, trivy_db: Path
) -> None:
    """Relative settings paths are the project root's, whatever the working directory."""
    import shutil
    import uuid

    relative = f"build/test-{uuid.uuid4().hex[:8]}"
    env = {
        "TRIVY_CACHE_DIR": str(trivy_db),
        "INVOKE_DOCKER_RECORD": f"{relative}/image.toml",
        "INVOKE_DOCKER_SCAN_OUTPUT_DIR": f"{relative}/scan",
    }
    argv = [sys.executable, "-m", "invoke", "docker.publish", "--platform", "linux/amd64"]
    argv += ["--no-arm64", "--no-db-update", "--no-push", "--no-sign"]
    argv += ["--ref", "main", "--sha", "6f3e8fa" + "0" * 33]
    try:
        done = subprocess.run(
            argv,
            cwd=ROOT / "gateway",
            env={
                **os.environ,
                "INVOKE_DOCKER_IMAGE": scratch_repo,
                "INVOKE_DOCKER_HISTORY": str(tmp_path / "history.jsonl"),
                **env,
            },
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr
        record = BuildRecord.read(ROOT / relative / "image.toml")
        scanned = json.loads((ROOT / relative / "scan" / "scan.json").read_text())
        assert scanned["target"]["digest"] == record.digest
        assert not (ROOT / "gateway" / "build").exists()
    finally:
        shutil.rmtree(ROOT / relative, ignore_errors=True)
        remove_images(f"{scratch_repo}:latest", f"{scratch_repo}:main-6f3e8fa")


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
    [entry] = history_lines(tmp_path)
    assert entry["result"] == "failure"
    assert entry["error"].startswith("image scan failed: vuln not scanned but required")


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
    assert not (tmp_path / "history.jsonl").exists()


# --- the whole run, with fake steps: one history line per run ---

SHA = "6f3e8fa" + "0" * 33


def publish_settings(tmp_path: Path) -> Settings:
    return fixtures_image.project_settings(
        image="127.0.0.1:5000/test/history",
        record=str(tmp_path / "image.toml"),
        history=str(tmp_path / "history.jsonl"),
    )


def fake_steps(fail: str = "") -> StepFactory:
    """Steps that do no I/O except the build record a real build step writes."""

    def factory(plan: PublishPlan, summary: Summary) -> dict[str, Callable[[], Mapping[str, Any]]]:
        def build() -> Mapping[str, Any]:
            if fail == "build":
                raise UsageError("no Dockerfile at docker/Dockerfile")
            BuildRecord(
                image=plan.tags.image,
                version=plan.tags.version,
                tags=list(plan.tags.tag_names),
                platforms=["linux/amd64"],
                revision=plan.context.sha,
                ref=plan.context.ref,
                cached_steps=3,
                total_steps=9,
                sizes={"linux/amd64": 52_000_000},
                built_at="2026-11-29T18:00:00Z",
            ).write(plan.record_path)
            return {"platforms": ["linux/amd64"]}

        def scan() -> Mapping[str, Any]:
            summary.scan_counts = {"CRITICAL": 0, "HIGH": 2}
            if fail == "scan":
                raise GateError("image scan failed: 2 HIGH")
            return {"scan": "passed (HIGH 2)"}

        def ok(facts: Mapping[str, Any]) -> Callable[[], Mapping[str, Any]]:
            return lambda: facts

        return {
            "build": build,
            "test": ok({"detail": "9 checks passed"}),
            "scan": scan,
            "push": ok({"digest": DIGEST, "pushed": True}),
            "sign": ok({"signed": "verified (key)"}),
        }

    return factory


def publish_with(
    tmp_path: Path, fail: str = "", environ: Mapping[str, str] | None = None, **flags: Any
) -> Summary:
    return publish(
        PublishRequest(git=RefFlags(ref="main", sha=SHA), **flags),
        root=tmp_path,
        settings=publish_settings(tmp_path),
        environ={"COSIGN_KEY": "cosign.key"} if environ is None else environ,
        cwd=ROOT,
        log=lambda _: None,
        steps=fake_steps(fail),
        clock=ticking(),
    )


def history_lines(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]


def test_a_successful_publish_appends_one_history_line_from_its_build_record(
    tmp_path: Path,
) -> None:
    summary = publish_with(tmp_path)
    assert summary.ok and summary.pushed
    [entry] = history_lines(tmp_path)
    assert entry == {
        "result": "success",
        "kind": "publish",
        "when": "2026-11-29T18:00:00Z",
        "commit": SHA,
        "ref": "refs/heads/main",
        "image": "127.0.0.1:5000/test/history",
        "version": "dev-main-6f3e8fa",
        "tags": ["latest", "main-6f3e8fa"],
        "steps": {"build": 1.5, "test": 1.5, "scan": 1.5, "push": 1.5, "sign": 1.5},
        "cached_steps": 3,
        "total_steps": 9,
        "sizes": {"linux/amd64": 52_000_000},
        "scan": {"CRITICAL": 0, "HIGH": 2},
        "error": "",
    }


def test_a_failed_scan_appends_one_failure_line_with_the_error(tmp_path: Path) -> None:
    summary = publish_with(tmp_path, fail="scan")
    assert isinstance(summary.failure, GateError)
    [entry] = history_lines(tmp_path)
    assert entry["result"] == "failure"
    assert entry["error"] == "image scan failed: 2 HIGH"
    assert entry["steps"] == {"build": 1.5, "test": 1.5, "scan": 1.5}
    assert entry["scan"] == {"CRITICAL": 0, "HIGH": 2}


def test_a_failed_build_is_recorded_from_its_tags_not_from_an_earlier_record(
    tmp_path: Path,
) -> None:
    BuildRecord(image="old", version="0.9.0", tags=["0.9.0"], platforms=[]).write(
        tmp_path / "image.toml"
    )
    summary = publish_with(tmp_path, fail="build")
    assert summary.failure is not None and summary.pushed is False
    [entry] = history_lines(tmp_path)
    assert (entry["result"], entry["image"], entry["version"], entry["commit"]) == (
        "failure",
        "127.0.0.1:5000/test/history",
        "dev-main-6f3e8fa",
        SHA,
    )
    assert entry["tags"] == ["latest", "main-6f3e8fa"]
    assert entry["error"] == "no Dockerfile at docker/Dockerfile"
    assert entry["steps"] == {"build": 1.5} and entry["scan"] is None


def test_each_run_appends_exactly_one_line_and_a_refused_run_none(tmp_path: Path) -> None:
    publish_with(tmp_path)
    publish_with(tmp_path, push=False)
    assert [list(e["steps"]) for e in history_lines(tmp_path)] == [
        ["build", "test", "scan", "push", "sign"],
        ["build", "test", "scan"],
    ]
    with pytest.raises(UsageError, match="no signing key is set"):
        publish_with(tmp_path, environ={})
    assert len(history_lines(tmp_path)) == 2
