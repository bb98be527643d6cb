"""The composite actions and workflows run for real under act (offline, host mode), against the
registry on 127.0.0.1:5000, with real GitHub event payloads (tests/fixtures/events/). Remote
actions (checkout, setup-python...) are mapped to the stand-ins in tests/actions/ with
``--local-repository``. What CI does must be what ``invoke`` does at a terminal: the publish
action's outputs equal the task's own ``key=value`` lines, down to the digest."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import SECRET_PATH, Receiver

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "tests" / "fixtures" / "events"
STAND_INS = ROOT / "tests" / "actions"
ACT = Path(sys.executable).parent / "act"
PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s+([\w.-]+)/([\w.-]+)(?:/[\w./-]+)?@([0-9a-f]{40}) #")
COMMIT_TIME = "2026-11-01T00:00:00Z"
RUNNERS = ("ubuntu-latest", "ubuntu-24.04", "ubuntu-24.04-arm")

pytestmark = [pytest.mark.engine, pytest.mark.slow]


# --- the harness ---


def stand_in_mappings() -> list[str]:
    """``--local-repository owner/repo@sha=tests/actions/repo`` for every pinned action."""
    found: set[tuple[str, str, str]] = set()
    sources = [
        *(ROOT / "actions").glob("*/action.yml"),
        *(ROOT / ".github" / "workflows").glob("*.yml"),
        *(ROOT / "tests" / "workflows").glob("*.yml"),
    ]
    for path in sources:
        for line in path.read_text(encoding="utf-8").splitlines():
            if match := PINNED.match(line):
                found.add((match.group(1), match.group(2), match.group(3)))
    args: list[str] = []
    for owner, repo, sha in sorted(found):
        args += ["--local-repository", f"{owner}/{repo}@{sha}={STAND_INS / repo}"]
    return args


@dataclass(frozen=True)
class Snapshot:
    """The working tree as one commit of a repository whose origin is GitHub's."""

    path: Path
    sha: str


def snapshot(
    target: Path, *, dockerfile_tail: str = "", edits: tuple[tuple[str, str, str], ...] = ()
) -> Snapshot:
    """Copy the tracked and untracked (not ignored) files of the work tree into ``target`` and
    commit them at ``COMMIT_TIME``; ``dockerfile_tail`` is appended to the Dockerfile first, and
    each ``(path, old, new)`` of ``edits`` replaces ``old`` (which must be there) in that file."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    if dockerfile_tail:
        dockerfile = target / "docker" / "Dockerfile"
        dockerfile.write_text(dockerfile.read_text() + dockerfile_tail)
    for name, old, new in edits:
        text = (target / name).read_text()
        assert old in text, f"{name}: no {old!r}"
        (target / name).write_text(text.replace(old, new))
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Octo Cat",
        "GIT_AUTHOR_EMAIL": "octocat@users.noreply.github.com",
        "GIT_COMMITTER_NAME": "Octo Cat",
        "GIT_COMMITTER_EMAIL": "octocat@users.noreply.github.com",
        "GIT_AUTHOR_DATE": COMMIT_TIME,
        "GIT_COMMITTER_DATE": COMMIT_TIME,
    }
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "remote", "add", "origin", "https://github.com/acme/api-gateway.git"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "--no-gpg-sign", "-m", "Release pipeline"],
    ):
        subprocess.run(argv, cwd=target, env=env, check=True, capture_output=True)
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=target, capture_output=True, text=True, check=True
    ).stdout.strip()
    return Snapshot(target, sha)


def event_payload(name: str, sha: str, target: Path) -> Path:
    """A fixture payload with its commit fields pointing at ``sha``."""
    data = json.loads((EVENTS / name).read_text())
    if "after" in data:
        data["after"] = sha
    if data.get("head_commit"):
        data["head_commit"]["id"] = sha
        data["head_commit"]["timestamp"] = COMMIT_TIME
    if data.get("pull_request"):
        data["pull_request"]["head"]["sha"] = sha
    path = target / name
    path.write_text(json.dumps(data))
    return path


def base_env(venv: Path, trivy_db: Path) -> dict[str, str]:
    """This process's environment without GitHub's or Invoke's variables, plus the offline
    scanner database and one shared pipeline environment (``uv sync`` fills it once)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "INVOKE_", "RUNNER_", "ACTIONS_", "COSIGN_"))
        and k not in ("VIRTUAL_ENV", "SOURCE_DATE_EPOCH", "UV_PROJECT_ENVIRONMENT")
    }
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    env["TRIVY_CACHE_DIR"] = str(trivy_db)
    env["TRIVY_SKIP_DB_UPDATE"] = "true"
    # act runs a matrix's jobs at once on this one machine (GitHub: one runner each); Trivy's
    # file cache allows one process at a time.
    env["TRIVY_CACHE_BACKEND"] = "memory"
    return env


@dataclass
class ActRun:
    returncode: int
    log: str
    lines: list[dict[str, Any]]

    def steps(self, stage: str = "Main") -> list[tuple[str, str, str]]:
        """(job, step name, result) of every step that ran in ``stage``, the steps inside
        composite actions included (act names those in its message only)."""
        done = []
        for line in self.lines:
            if not line.get("stepResult") or line.get("stage") != stage:
                continue
            match = re.match(rf"^\s*\S+\s+\w+ - {stage} (.+?) \[[^\]]*\]$", line["msg"])
            name = match.group(1) if match else str(line.get("step", ""))
            done.append((str(line.get("jobID", "")), name, str(line["stepResult"])))
        return done


def act(
    repo: Snapshot,
    workflow: str,
    event: str,
    payload: Path,
    *,
    env: dict[str, str],
    work: Path,
    variables: dict[str, str] | None = None,
    act_env: dict[str, str] | None = None,
    secrets: tuple[str, ...] = (),
    matrix: tuple[str, ...] = (),
    job: str = "",
    timeout: float = 1200,
) -> ActRun:
    """Run one workflow of ``repo`` under act, offline, steps on this machine."""
    argv = [str(ACT), event, "-W", workflow, "-e", str(payload)]
    for runner in RUNNERS:
        argv += ["-P", f"{runner}=-self-hosted"]
    argv += [
        "--no-cache-server",
        "--action-offline-mode",
        "--action-cache-path",
        str(work / "act-cache"),
        "--json",
        *stand_in_mappings(),
    ]
    for key, value in (variables or {}).items():
        argv += ["--var", f"{key}={value}"]
    for key, value in (act_env or {}).items():
        argv += ["--env", f"{key}={value}"]
    for name in secrets:  # the value comes from the environment, never argv
        argv += ["-s", name]
    for entry in matrix:
        argv += ["--matrix", entry]
    if job:
        argv += ["--job", job]
    done = subprocess.run(
        argv,
        cwd=repo.path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = []
    for raw in done.stdout.splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    log = "\n".join(str(line.get("msg", "")).rstrip() for line in lines) + done.stderr
    (work / "act.log").write_text(log)
    (work / "act.jsonl").write_text(done.stdout)
    return ActRun(done.returncode, log, lines)


def terminal(repo: Snapshot, image: str, *event: str, env: dict[str, str]) -> dict[str, str]:
    """``uv run invoke docker.publish`` in the snapshot with the action's inputs and the event
    as flags, as at a terminal: its ``key=value`` lines."""
    inputs = ["--image", image, "--platform", "linux/amd64", "--cache", "none"]
    done = subprocess.run(
        ["uv", "run", "invoke", "docker.publish", *inputs, *event],
        cwd=repo.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(
        line.split("=", 1) for line in done.stdout.splitlines() if re.match(r"^[a-z]+=", line)
    )


def registry_tags(image: str) -> set[str]:
    """The tags of ``127.0.0.1:5000/REPO`` (empty if the repository does not exist)."""
    host, _, repository = image.partition("/")
    try:
        with urllib.request.urlopen(f"http://{host}/v2/{repository}/tags/list", timeout=10) as r:
            return set(json.load(r).get("tags") or [])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return set()
        raise


def index_of(image: str, digest: str) -> dict[str, Any]:
    """The index ``127.0.0.1:5000/REPO@digest`` as the registry serves it."""
    host, _, repository = image.partition("/")
    request = urllib.request.Request(
        f"http://{host}/v2/{repository}/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        data: dict[str, Any] = json.load(response)
    return data


def provenance_subjects(index: dict[str, Any]) -> list[str]:
    """The platform manifest each attestation manifest of an index is about."""
    return sorted(
        entry["annotations"]["vnd.docker.reference.digest"]
        for entry in index.get("manifests", [])
        if (entry.get("annotations") or {}).get("vnd.docker.reference.type")
        == "attestation-manifest"
    )


def release_tags(image: str) -> set[str]:
    """The tags without cosign's signature tags (``sha256-<hex>.sig``)."""
    return {t for t in registry_tags(image) if not t.startswith("sha256-")}


def remove_local_images(image: str) -> None:
    listed = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", image],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if listed:
        subprocess.run(["docker", "image", "rm", "-f", *listed], capture_output=True, check=False)


# --- fixtures ---


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One pipeline environment for every act run and terminal run of this module: the setup
    action's `uv sync --locked` fills it once, later runs find it in sync."""
    where = tmp_path_factory.mktemp("act-venv")
    yield where / "venv"
    shutil.rmtree(where, ignore_errors=True)


@pytest.fixture(scope="module")
def cosign_key(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A throwaway cosign key pair: COSIGN_KEY (PEM) and COSIGN_PASSWORD, as variables."""
    where = tmp_path_factory.mktemp("cosign")
    password = uuid.uuid4().hex
    subprocess.run(
        ["cosign", "generate-key-pair"],
        cwd=where,
        env={**os.environ, "COSIGN_PASSWORD": password},
        capture_output=True,
        check=True,
    )
    return {"COSIGN_KEY": (where / "cosign.key").read_text(), "COSIGN_PASSWORD": password}


@pytest.fixture
def image(scratch_repo: str) -> Iterator[str]:
    name = f"{scratch_repo}/api-gateway"
    yield name
    remove_local_images(name)


# --- actions/publish ---


def publish(
    tmp_path: Path,
    repo: Snapshot,
    image: str,
    event_file: str,
    venv: Path,
    trivy_db: Path,
    cosign_key: dict[str, str],
) -> tuple[ActRun, dict[str, str]]:
    """Run tests/workflows/publish.yml for one event; the action's outputs."""
    event = "pull_request" if event_file.startswith("pull") else "push"
    result = tmp_path / "result.json"
    run = act(
        repo,
        "tests/workflows/publish.yml",
        event,
        event_payload(event_file, repo.sha, tmp_path),
        env={**base_env(venv, trivy_db), **cosign_key},
        work=tmp_path,
        # BuildKit's own cache still serves the layers; no cache export per run.
        variables={"IMAGE": image, "CACHE": "none"},
        act_env={"RESULT_FILE": str(result)},
        secrets=("COSIGN_KEY", "COSIGN_PASSWORD"),
    )
    outputs = json.loads(result.read_text()) if result.exists() else {}
    return run, outputs


def same_as_terminal(outputs: dict[str, str], printed: dict[str, str]) -> None:
    """The action's outputs equal the terminal's lines. A pushed image is one index: the
    terminal's re-run finds the same platform manifests under the tag and keeps that index.
    An image that is not pushed is named by its local index, which holds its own run's
    provenance attestation, so only its form is compared."""
    assert outputs["version"] == printed["version"]
    assert outputs["tags"].split("\n") == printed["tags"].split(",")
    assert outputs["pushed"] == printed["pushed"]
    if outputs["pushed"] == "true":
        assert outputs["digest"] == printed["digest"]
    else:
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", outputs["digest"])
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", printed["digest"])


def test_a_push_to_main_publishes_latest_and_the_sha_tag_as_the_terminal_does(
    tmp_path: Path, image: str, venv: Path, trivy_db: Path, cosign_key: dict[str, str]
) -> None:
    repo = snapshot(tmp_path / "repo")
    (tmp_path / "run").mkdir()
    run, outputs = publish(
        tmp_path / "run", repo, image, "push-main.json", venv, trivy_db, cosign_key
    )
    assert run.returncode == 0, run.log[-6000:]
    assert outputs["outcome"] == "success"
    assert release_tags(image) == {"latest", f"main-{repo.sha[:7]}"}
    assert outputs["pushed"] == "true"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", outputs["digest"])
    assert f"sha256-{outputs['digest'][7:]}.sig" in registry_tags(image), "not signed"
    index = index_of(image, outputs["digest"])
    images = sorted(e["digest"] for e in index["manifests"] if e["platform"]["os"] != "unknown")
    assert len(images) == 1, "the workflow under test builds linux/amd64 only"
    assert provenance_subjects(index) == images, "max-mode provenance for the image"

    printed = terminal(
        repo,
        image,
        "--event",
        "push",
        "--ref",
        "refs/heads/main",
        "--sha",
        repo.sha,
        env={**base_env(venv, trivy_db), **cosign_key},
    )
    same_as_terminal(outputs, printed)


def test_a_release_tag_publishes_the_four_version_tags_as_the_terminal_does(
    tmp_path: Path, image: str, venv: Path, trivy_db: Path, cosign_key: dict[str, str]
) -> None:
    repo = snapshot(tmp_path / "repo")
    (tmp_path / "run").mkdir()
    run, outputs = publish(
        tmp_path / "run", repo, image, "push-tag-v1.2.3.json", venv, trivy_db, cosign_key
    )
    assert run.returncode == 0, run.log[-6000:]
    assert release_tags(image) == {"v1.2.3", "1.2.3", "1.2", "1"}
    assert outputs["version"] == "1.2.3"

    printed = terminal(
        repo,
        image,
        "--event",
        "push",
        "--ref",
        "refs/tags/v1.2.3",
        "--sha",
        repo.sha,
        env={**base_env(venv, trivy_db), **cosign_key},
    )
    same_as_terminal(outputs, printed)


def test_a_pull_request_builds_tests_and_scans_but_pushes_nothing_as_the_terminal_does(
    tmp_path: Path, image: str, venv: Path, trivy_db: Path, cosign_key: dict[str, str]
) -> None:
    repo = snapshot(tmp_path / "repo")
    (tmp_path / "run").mkdir()
    run, outputs = publish(
        tmp_path / "run", repo, image, "pull-request-opened.json", venv, trivy_db, cosign_key
    )
    assert run.returncode == 0, run.log[-6000:]
    assert registry_tags(image) == set()
    assert outputs["pushed"] == "false"

    printed = terminal(
        repo,
        image,
        "--event",
        "pull_request",
        "--pr",
        "42",
        "--sha",
        repo.sha,
        env={**base_env(venv, trivy_db), **cosign_key},
    )
    same_as_terminal(outputs, printed)


# An installed distribution the tiny Trivy database knows a HIGH advisory for (CVE-2018-18074).
VULNERABLE = """
RUN mkdir -p /tmp/site/requests-2.19.0.dist-info \\
 && printf 'Metadata-Version: 2.1\\nName: requests\\nVersion: 2.19.0\\n' \\
    > /tmp/site/requests-2.19.0.dist-info/METADATA
"""


def test_a_failing_scan_fails_the_job_and_pushes_nothing(
    tmp_path: Path, image: str, venv: Path, trivy_db: Path, cosign_key: dict[str, str]
) -> None:
    repo = snapshot(tmp_path / "repo", dockerfile_tail=VULNERABLE)
    (tmp_path / "run").mkdir()
    run, outputs = publish(
        tmp_path / "run", repo, image, "push-main.json", venv, trivy_db, cosign_key
    )
    assert run.returncode != 0
    assert outputs["outcome"] == "failure"
    assert "CVE-2018-18074" in run.log
    assert registry_tags(image) == set()


# --- .github/workflows/docker-build.yml ---


def workflow_jobs(name: str) -> dict[str, Any]:
    """The jobs of ``.github/workflows/NAME`` as parsed from the YAML act runs."""
    data = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text(encoding="utf-8"))
    jobs: dict[str, Any] = data["jobs"]
    return jobs


def test_a_pull_request_runs_only_read_only_jobs_that_build_test_and_scan_and_push_nothing(
    tmp_path: Path, image: str, venv: Path, trivy_db: Path
) -> None:
    repo = snapshot(tmp_path / "repo")
    run = act(
        repo,
        ".github/workflows/docker-build.yml",
        "pull_request",
        event_payload("pull-request-opened.json", repo.sha, tmp_path),
        env=base_env(venv, trivy_db),
        work=tmp_path,
        variables={"IMAGE": image, "TRIVY_CACHE_DIR": str(trivy_db)},
        matrix=("platform:linux/amd64",),  # the arm64 leg is the same job on an arm64 runner
    )
    assert run.returncode == 0, run.log[-6000:]
    ran = run.steps()
    assert {job for job, _, _ in ran} == {"verify"}, "only the read-only job runs for a PR"
    assert {result for _, _, result in ran} == {"success"}
    # Each job's token has its job's `permissions` (act hands out none): every job that ran
    # could only read the code.
    jobs = workflow_jobs("docker-build.yml")
    assert {job: jobs[job]["permissions"] for job in job_order(run)} == {
        "verify": {"contents": "read"}
    }
    assert ("verify", "invoke docker.publish", "success") in ran
    assert "stand-in: would log in" not in run.log
    assert f"stand-in: cache miss for trivy-db-Linux-{today()}" in run.log
    assert f"{image}:pr-42" in run.log
    assert registry_tags(image) == set()


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


# --- .github/workflows/maintenance.yml ---

# A small image built on the base, recording it, its build time and the version (the ref that
# built it: what prune classifies by) the way docker.build does.
MAINTAINED = """\
FROM 127.0.0.1:5000/library/python:3.11-slim
LABEL org.opencontainers.image.base.name=127.0.0.1:5000/library/python:3.11-slim \\
      org.opencontainers.image.base.digest={digest} \\
      org.opencontainers.image.created={created} \\
      org.opencontainers.image.version={version}
USER 65534
HEALTHCHECK CMD ["python3", "-c", "print()"]
"""


MAIN = "dev-main-abc1234"
OLD_BRANCH = "dev-feature-old-abc1234"


def push_image(
    context: Path, dockerfile: str, tags: list[str], platforms: str = "linux/amd64,linux/arm64"
) -> None:
    """Build and push an index of ``platforms`` under ``tags`` (arm64 under QEMU)."""
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    built = subprocess.run(
        ["docker", "buildx", "build", "--push", "--provenance=false", f"--platform={platforms}"]
        + [f"--tag={tag}" for tag in tags]
        + [str(context)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]


def manifest_digest(image: str, tag: str) -> str:
    host, _, repository = image.partition("/")
    request = urllib.request.Request(
        f"http://{host}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={
            "Accept": "application/vnd.oci.image.index.v1+json,"
            "application/vnd.docker.distribution.manifest.list.v2+json"
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.headers["Docker-Content-Digest"])


def test_the_maintenance_workflow_runs_offline_on_schedule_and_calls_only_tasks(
    tmp_path: Path, image: str, venv: Path, trivy_db: Path
) -> None:
    base = manifest_digest("127.0.0.1:5000/library/python", "3.11-slim")
    push_image(
        tmp_path / "current",
        MAINTAINED.format(digest=base, created="2026-11-01T00:00:00Z", version=MAIN),
        [f"{image}:{tag}" for tag in ("latest", "staging", "production")],
    )
    # A branch build older than the retention's 30 days: a scheduled run deletes it.
    push_image(
        tmp_path / "old",
        MAINTAINED.format(digest=base, created="2020-01-01T00:00:00Z", version=OLD_BRANCH),
        [f"{image}:feature-old-abc1234"],
    )
    repo = snapshot(tmp_path / "repo")

    run = act(
        repo,
        ".github/workflows/maintenance.yml",
        "schedule",
        event_payload("schedule.json", repo.sha, tmp_path),
        env=base_env(venv, trivy_db),
        work=tmp_path,
        variables={"IMAGE": image, "TRIVY_CACHE_DIR": str(trivy_db)},
    )

    assert run.returncode == 0, run.log[-6000:]
    ran = run.steps()
    assert {result for _, _, result in ran} == {"success"}
    jobs = {job for job, _, _ in ran}
    assert jobs == {"rescan", "outdated", "prune"}, "notify runs only on failure"
    # Every step that ran is an action, a stand-in for a remote one, setup plumbing or a task.
    runs = {step for _, step, _ in ran if not step.startswith(("stand-in: ", "./actions/"))}
    runs -= {step for step in runs if re.match(r"^[\w-]+/[\w.-]+(/[\w-]+)?@[0-9a-f]{40}$", step)}
    assert runs == {
        "Install the locked dependencies",
        "Find what the engine lacks",
        "Name today's scanner cache",
        "Restore Trivy's database",
        "invoke docker.rescan",
        "Upload the SARIF to code scanning",
        "invoke docker.outdated",
        "invoke docker.prune",
    }
    assert run.log.count("stand-in: SARIF ok") == 6, "one SARIF per environment and platform"
    summarised = {
        (line["matrix"]["ref"], line["matrix"]["target"]["platform"])
        for line in run.lines
        if "Summary - ## Image scan" in str(line.get("msg")) and line.get("matrix")
    }
    assert summarised == {
        (ref, platform)
        for ref in ("latest", "staging", "production")
        for platform in ("linux/amd64", "linux/arm64")
    }, "each platform's verdict in a step summary"
    assert f"stand-in: cache miss for trivy-db-Linux-{today()}" in run.log
    assert f"current: 127.0.0.1:5000/library/python:3.11-slim is still {base}" in run.log
    assert "delete feature-old-abc1234" in run.log and "deleted 1 digest(s)" in run.log
    assert release_tags(image) == {"latest", "staging", "production"}


def test_a_manual_maintenance_run_prunes_as_a_dry_run_unless_asked(
    tmp_path: Path, image: str, venv: Path, trivy_db: Path
) -> None:
    base = manifest_digest("127.0.0.1:5000/library/python", "3.11-slim")
    push_image(
        tmp_path / "old",
        MAINTAINED.format(digest=base, created="2020-01-01T00:00:00Z", version=OLD_BRANCH),
        [f"{image}:feature-old-abc1234"],
    )
    repo = snapshot(tmp_path / "repo")

    run = act(
        repo,
        ".github/workflows/maintenance.yml",
        "workflow_dispatch",
        event_payload("workflow-dispatch-maintenance.json", repo.sha, tmp_path),
        env=base_env(venv, trivy_db),
        work=tmp_path,
        variables={"IMAGE": image},
        job="prune",
    )

    assert run.returncode == 0, run.log[-6000:]
    assert ("prune", "invoke docker.prune", "success") in run.steps()
    assert "would delete feature-old-abc1234" in run.log
    assert "(dry run: pass --yes to delete)" in run.log
    assert release_tags(image) == {"feature-old-abc1234"}


def test_a_new_advisory_fails_the_scheduled_rescan_which_still_reports_and_notifies(
    tmp_path: Path, image: str, venv: Path, trivy_db: Path, receiver: Receiver
) -> None:
    base = manifest_digest("127.0.0.1:5000/library/python", "3.11-slim")
    clean = MAINTAINED.format(digest=base, created="2026-11-01T00:00:00Z", version=MAIN)
    push_image(tmp_path / "clean", clean, [f"{image}:latest", f"{image}:staging"])
    push_image(tmp_path / "vulnerable", clean + VULNERABLE, [f"{image}:production"])
    repo = snapshot(tmp_path / "repo")

    run = act(
        repo,
        ".github/workflows/maintenance.yml",
        "schedule",
        event_payload("schedule.json", repo.sha, tmp_path),
        env={**base_env(venv, trivy_db), "NOTIFY_WEBHOOK_URL": receiver.url},
        work=tmp_path,
        variables={"IMAGE": image, "TRIVY_CACHE_DIR": str(trivy_db)},
        secrets=("NOTIFY_WEBHOOK_URL",),
    )

    assert run.returncode != 0
    ran = run.steps()
    rescans = sorted(
        (line["matrix"]["ref"], line["matrix"]["target"]["platform"], str(line["stepResult"]))
        for line in run.lines
        if line.get("stepResult") and "Main invoke docker.rescan" in str(line.get("msg"))
    )
    assert rescans == [
        ("latest", "linux/amd64", "success"),
        ("latest", "linux/arm64", "success"),
        ("production", "linux/amd64", "failure"),
        ("production", "linux/arm64", "failure"),
        ("staging", "linux/amd64", "success"),
        ("staging", "linux/arm64", "success"),
    ], "the advisory is found in both platforms of production"
    assert "CVE-2018-18074" in run.log
    assert run.log.count("stand-in: SARIF ok") == 6, "the failed scans' SARIF is uploaded too"
    assert ("notify", "Notify of the failure", "success") in ran
    (message,) = receiver.bodies
    assert message["text"].startswith(":x: api-gateway maintenance failed in rescan")
    assert message["attachments"][0]["fields"] == [
        {"title": "outdated", "value": "success", "short": True},
        {"title": "prune", "value": "success", "short": True},
        {"title": "rescan", "value": "failure", "short": True},
    ]
    assert SECRET_PATH not in run.log, "the webhook URL is a secret"


# --- .github/workflows/deploy.yml, and docker-build.yml from push to deployment ---

KUBECTL_STAND_IN = ROOT / "tests" / "workflows" / "bin"


@dataclass(frozen=True)
class Cluster:
    """The kubectl stand-in's record: its calls, and the manifests it was asked to apply."""

    where: Path

    def environ(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with the stand-in first on its PATH."""
        real = shutil.which("kubectl")
        assert real, "the stand-in renders with the real kubectl (kustomize)"
        return {
            **env,
            # deploy.k8s deploys to the context [tool.pipeline.deploy.ENV] names: the stand-in's.
            "INVOKE_DOCKER_DEPLOY_STAGING_CONTEXT": "act-cluster",
            "INVOKE_DOCKER_DEPLOY_PRODUCTION_CONTEXT": "act-cluster",
            "KUBECTL_LOG": str(self.where / "calls"),
            "KUBECTL_REAL": real,
            "PATH": f"{KUBECTL_STAND_IN}{os.pathsep}{env['PATH']}",
        }

    def calls(self) -> list[str]:
        log = self.where / "calls"
        return log.read_text().splitlines() if log.exists() else []

    def verbs(self) -> list[str]:
        """Each call's first two words after ``--context NAME`` (a kustomize call's folder is a
        temporary one)."""
        words = [call.removeprefix("--context act-cluster ").split() for call in self.calls()]
        return ["kustomize" if w[0] == "kustomize" else " ".join(w[:2]) for w in words]

    def applied(self) -> list[str]:
        return [
            (self.where / f"applied-{n}.yaml").read_text()
            for n in range(1, len(list(self.where.glob("applied-*.yaml"))) + 1)
        ]


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    where = tmp_path / "cluster"
    where.mkdir()
    return Cluster(where)


def sign_digest(repo: Snapshot, ref: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        ["uv", "run", "invoke", "docker.sign", "--ref", ref],
        cwd=repo.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def job_order(run: ActRun) -> list[str]:
    """The jobs that ran, in the order act started them (a job starts after its needs end)."""
    seen: list[str] = []
    for line in run.lines:
        job = str(line.get("jobID") or "")
        if job and job not in seen:
            seen.append(job)
    return seen


def platform_images(image: str, digest: str) -> set[str]:
    """The platform image manifests of ``digest``: itself if it is one, else the entries of
    the index it is, without attestation manifests."""
    host, _, repository = image.partition("/")
    request = urllib.request.Request(
        f"http://{host}/v2/{repository}/manifests/{digest}",
        headers={
            "Accept": "application/vnd.oci.image.index.v1+json,"
            "application/vnd.oci.image.manifest.v1+json"
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        data: dict[str, Any] = json.load(response)
    if "manifests" not in data:
        return {digest}
    return {
        entry["digest"]
        for entry in data["manifests"]
        if (entry.get("platform") or {}).get("os") != "unknown"
    }


def deployed_as(run: ActRun) -> set[str]:
    """act's name for the deploy job that ran: CALLER-JOB/deploy/deploy ENVIRONMENT."""
    return {str(line.get("job")).strip() for line in run.lines if line.get("jobID") == "deploy"}


def signed_image(tmp_path: Path, image: str, name: str, env: dict[str, str], repo: Snapshot) -> str:
    """Push a small two-platform index as IMAGE:NAME, sign it by digest; its digest."""
    base = manifest_digest("127.0.0.1:5000/library/python", "3.11-slim")
    push_image(
        tmp_path / name,
        MAINTAINED.format(digest=base, created="2026-11-01T00:00:00Z", version=MAIN)
        + f"LABEL build={name}\n",
        [f"{image}:{name}"],
    )
    digest = manifest_digest(image, name)
    sign_digest(repo, f"{image}@{digest}", env)
    return digest


def test_the_deploy_workflow_promotes_the_signed_digest_to_staging_and_rolls_it_out(
    tmp_path: Path,
    image: str,
    venv: Path,
    trivy_db: Path,
    cosign_key: dict[str, str],
    cluster: Cluster,
) -> None:
    repo = snapshot(tmp_path / "repo")
    env = {**base_env(venv, trivy_db), **cosign_key}
    digest = signed_image(tmp_path, image, "build-1", env, repo)

    run = act(
        repo,
        "tests/workflows/deploy-staging.yml",
        "push",
        event_payload("push-main.json", repo.sha, tmp_path),
        env=cluster.environ(env),
        work=tmp_path,
        variables={"IMAGE": image, "DIGEST": digest},
    )

    assert run.returncode == 0, run.log[-6000:]
    ran = run.steps()
    assert ("deploy", "Promote the signed digest", "success") in ran
    assert ("deploy", "Deploy it to the cluster", "success") in ran
    assert {result for _, _, result in ran} == {"success"}
    assert deployed_as(run) == {"staging/deploy/deploy staging"}
    assert manifest_digest(image, "staging") == digest
    assert f"staging={digest}" in run.log
    (applied,) = cluster.applied()
    assert f"image: {image}@{digest}" in applied
    assert cluster.verbs() == [
        "config current-context",
        "kustomize",
        "get secret",
        "kustomize",
        "diff --server-side",
        "apply --server-side",
        "rollout status",
    ]


def test_an_unsigned_digest_is_never_promoted_nor_deployed(
    tmp_path: Path,
    image: str,
    venv: Path,
    trivy_db: Path,
    cosign_key: dict[str, str],
    cluster: Cluster,
) -> None:
    repo = snapshot(tmp_path / "repo")
    base = manifest_digest("127.0.0.1:5000/library/python", "3.11-slim")
    push_image(
        tmp_path / "unsigned",
        MAINTAINED.format(digest=base, created="2026-11-01T00:00:00Z", version=MAIN),
        [f"{image}:build-1"],
    )
    digest = manifest_digest(image, "build-1")

    run = act(
        repo,
        "tests/workflows/deploy-staging.yml",
        "push",
        event_payload("push-main.json", repo.sha, tmp_path),
        env=cluster.environ({**base_env(venv, trivy_db), **cosign_key}),
        work=tmp_path,
        variables={"IMAGE": image, "DIGEST": digest},
    )

    assert run.returncode != 0
    ran = run.steps()
    assert ("deploy", "Promote the signed digest", "failure") in ran
    assert "is not signed" in run.log
    assert "staging" not in registry_tags(image)
    assert cluster.calls() == [], "nothing reached the cluster"


def test_a_manual_rollback_points_staging_back_and_rolls_the_cluster_out_to_it(
    tmp_path: Path,
    image: str,
    venv: Path,
    trivy_db: Path,
    cosign_key: dict[str, str],
    cluster: Cluster,
) -> None:
    repo = snapshot(tmp_path / "repo")
    env = {**base_env(venv, trivy_db), **cosign_key}
    first = signed_image(tmp_path, image, "build-1", env, repo)
    second = signed_image(tmp_path, image, "build-2", env, repo)
    for digest in (first, second):
        promote = ["docker.promote", "--to", "staging", "--ref", digest, "--image", image]
        done = subprocess.run(
            ["uv", "run", "invoke", *promote],
            cwd=repo.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]

    run = act(
        repo,
        ".github/workflows/deploy.yml",
        "workflow_dispatch",
        event_payload("workflow-dispatch-rollback.json", repo.sha, tmp_path),
        env=cluster.environ(env),
        work=tmp_path,
        variables={"IMAGE": image},
    )

    assert run.returncode == 0, run.log[-6000:]
    assert job_order(run) == ["rollback"], "a dispatch only rolls back"
    ran = run.steps()
    assert ("rollback", "Point the environment back", "success") in ran
    assert ("rollback", "Deploy what the environment points at", "success") in ran
    assert manifest_digest(image, "staging") == first
    (applied,) = cluster.applied()
    assert f"image: {image}@{first}" in applied


def release_run(
    tmp_path: Path,
    image: str,
    event_file: str,
    venv: Path,
    trivy_db: Path,
    cosign_key: dict[str, str],
    cluster: Cluster,
) -> tuple[Snapshot, ActRun]:
    """docker-build.yml for a push, amd64 only (the snapshot's pipeline builds that platform
    alone, so the merge expects it alone), the artifacts passed between jobs in a folder."""
    repo = snapshot(
        tmp_path / "repo",
        edits=(
            (
                "pyproject.toml",
                'platforms = ["linux/amd64", "linux/arm64"]',
                'platforms = ["linux/amd64"]',
            ),
        ),
    )
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    run = act(
        repo,
        ".github/workflows/docker-build.yml",
        "push",
        event_payload(event_file, repo.sha, tmp_path),
        env=cluster.environ(
            {**base_env(venv, trivy_db), **cosign_key, "ACT_ARTIFACTS": str(artifacts)}
        ),
        work=tmp_path,
        variables={"IMAGE": image, "TRIVY_CACHE_DIR": str(trivy_db)},
        matrix=("platform:linux/amd64",),
    )
    return repo, run


@dataclass(frozen=True)
class Release:
    """One act run of docker-build.yml for a push, and what it left behind."""

    repo: Snapshot
    run: ActRun
    image: str
    cluster: Cluster
    artifacts: Path


@pytest.fixture(scope="module")
def main_push(
    engine_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
    venv: Path,
    trivy_db: Path,
    cosign_key: dict[str, str],
) -> Iterator[Release]:
    """docker-build.yml for a push to main, run once for the tests that read its outcome."""
    where = tmp_path_factory.mktemp("main-push")
    image = f"127.0.0.1:5000/test/{uuid.uuid4().hex[:12]}/api-gateway"
    cluster = Cluster(where / "cluster")
    cluster.where.mkdir()
    repo, run = release_run(where, image, "push-main.json", venv, trivy_db, cosign_key, cluster)
    yield Release(repo, run, image, cluster, where / "artifacts")
    remove_local_images(image)


def test_a_push_to_main_builds_tests_and_scans_each_platform_before_pushing_it(
    main_push: Release,
) -> None:
    ran = main_push.run.steps()
    assert job_order(main_push.run)[0] == "build", "the pull request job does not run"
    assert "verify" not in job_order(main_push.run)
    build = [step for job, step, _ in ran if job == "build"]
    assert ("build", "invoke docker.publish", "success") in ran
    assert ("build", "stand-in: codeql-action/upload-sarif", "success") in ran
    assert build.index("invoke docker.publish") < build.index("Push the tested image by digest")


def test_a_push_to_main_pushes_the_tested_image_signs_it_moves_latest_then_deploys_staging(
    main_push: Release,
) -> None:
    run, image, repo = main_push.run, main_push.image, main_push.repo
    assert run.returncode == 0, run.log[-6000:]
    assert job_order(run) == ["build", "merge", "sign", "tag", "deploy"]
    digest = manifest_digest(image, f"main-{repo.sha[:7]}")
    assert manifest_digest(image, "latest") == digest
    assert manifest_digest(image, "staging") == digest
    assert deployed_as(run) == {"staging/deploy/deploy staging"}
    assert f"sha256-{digest[7:]}.sig" in registry_tags(image), "signed"
    (pushed,) = (main_push.artifacts / "digest-linux-amd64").iterdir()
    tested = platform_images(image, pushed.read_text().strip())
    assert tested == platform_images(image, digest), "the index holds the image pushed by digest"
    (applied,) = main_push.cluster.applied()
    assert f"image: {image}@{digest}" in applied


def test_a_release_tag_publishes_then_reaches_the_production_environment_job(
    tmp_path: Path,
    image: str,
    venv: Path,
    trivy_db: Path,
    cosign_key: dict[str, str],
    cluster: Cluster,
) -> None:
    _, run = release_run(
        tmp_path, image, "push-tag-v1.2.3.json", venv, trivy_db, cosign_key, cluster
    )
    assert run.returncode == 0, run.log[-6000:]
    assert job_order(run) == ["build", "merge", "sign", "tag", "deploy"]
    # act does not enforce protection rules: the job that ran is the one declaring the
    # environment, and it ran only after the moving tags.
    production = workflow_jobs("docker-build.yml")["production"]
    assert production["with"]["environment"] == "production"
    deploy = yaml.safe_load((ROOT / ".github/workflows/deploy.yml").read_text())["jobs"]["deploy"]
    assert deploy["environment"] == {"name": "${{ inputs.environment }}"}
    assert deployed_as(run) == {"production/deploy/deploy production"}
    digest = manifest_digest(image, "1.2.3")
    assert {tag: manifest_digest(image, tag) for tag in ("v1.2.3", "1.2", "1", "production")} == {
        tag: digest for tag in ("v1.2.3", "1.2", "1", "production")
    }
    (applied,) = cluster.applied()
    assert f"image: {image}@{digest}" in applied
