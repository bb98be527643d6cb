"""`invoke docker.tags` from the command line: the issue's table in JSON, errors in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHA = "0123456789abcdef0123456789abcdef01234567"
HEAD = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
IMAGE = "ghcr.io/acme/api-gateway"


def invoke(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INVOKE_"))}
    base.pop("SOURCE_DATE_EPOCH", None)
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(ROOT), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **(env or {})},
        check=False,
    )


ROWS = [
    (["--ref", "refs/heads/main"], ["latest", "main-0123456"], "dev-main-0123456"),
    (["--ref", "refs/heads/develop"], ["develop", "develop-0123456"], "dev-develop-0123456"),
    (
        ["--ref", "refs/heads/feature/Login#2"],
        ["feature-Login-2", "feature-Login-2-0123456"],
        "dev-feature-Login-2-0123456",
    ),
    (["--ref", "refs/tags/v1.2.3"], ["v1.2.3", "1.2.3", "1.2", "1"], "1.2.3"),
    (["--ref", "refs/tags/1.2.3"], ["v1.2.3", "1.2.3", "1.2", "1"], "1.2.3"),
    (
        ["--ref", "refs/tags/v1.0.0-alpha.1"],
        ["v1.0.0-alpha.1", "1.0.0-alpha.1"],
        "1.0.0-alpha.1",
    ),
    (["--ref", "refs/tags/v1.2.3+build.5"], ["v1.2.3", "1.2.3", "1.2", "1"], "1.2.3"),
    (["--ref", "refs/tags/v0.4.1"], ["v0.4.1", "0.4.1", "0.4"], "0.4.1"),
    (["--pr", "42", "--sha", HEAD], ["pr-42"], "pr-42-a1b2c3d"),
    (["--event", "local", "--ref", "main"], ["dev-main-0123456", "dev"], "dev-main-0123456"),
]


@pytest.mark.parametrize(("flags", "tags", "version"), ROWS, ids=[" ".join(r[0]) for r in ROWS])
def test_every_row_of_the_policy_from_the_command_line_in_json(
    flags: list[str], tags: list[str], version: str
) -> None:
    sha = [] if "--sha" in flags else ["--sha", SHA]
    done = invoke("docker.tags", *flags, *sha, "--format", "json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["tag_names"] == tags
    assert document["tags"] == [f"{IMAGE}:{t}" for t in tags]
    assert document["version"] == version
    assert document["latest"] is ("latest" in tags)
    assert document["labels"]["org.opencontainers.image.version"] == version
    assert set(document) == {"version", "tags", "tag_names", "labels", "latest"}


def test_a_released_list_from_the_command_line_decides_latest() -> None:
    done = invoke(
        "docker.tags",
        "--ref",
        "refs/tags/v1.9.1",
        "--sha",
        SHA,
        "--released",
        "v2.0.0",
        "--format",
        "json",
        env={"INVOKE_DOCKER_TAGS_LATEST": "release"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tag_names"] == ["v1.9.1", "1.9.1", "1.9", "1"]


def test_a_bad_tag_ref_exits_2_with_one_line_and_no_traceback() -> None:
    done = invoke("docker.tags", "--ref", "refs/tags/v1.2", "--sha", SHA)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == (
        "error: tag 'v1.2' is not a release version: "
        "expected vMAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], e.g. v1.2.3"
    )


def test_outside_a_git_checkout_without_flags_is_a_clear_error(tmp_path: Path) -> None:
    done = invoke("docker.tags", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {tmp_path} is not a git checkout with a commit: "
        "run inside the repository, or pass --ref and --sha"
    )


def test_an_invoke_variable_overrides_the_image_from_pyproject() -> None:
    done = invoke(
        "docker.tags",
        "--ref",
        "main",
        "--sha",
        SHA,
        "--format",
        "json",
        env={"INVOKE_DOCKER_IMAGE": "127.0.0.1:5000/Team/GW"},
    )
    assert json.loads(done.stdout)["tags"][0] == "127.0.0.1:5000/team/gw:latest"


def test_the_image_flag_overrides_the_variable() -> None:
    done = invoke(
        "docker.tags",
        "--ref",
        "main",
        "--sha",
        SHA,
        "--image",
        "reg.example/x",
        "--format",
        "json",
        env={"INVOKE_DOCKER_IMAGE": "127.0.0.1:5000/y"},
    )
    assert json.loads(done.stdout)["tags"][0] == "reg.example/x:latest"


def test_github_format_appends_outputs(tmp_path: Path) -> None:
    out = tmp_path / "output"
    out.write_text("before=1\n")
    done = invoke(
        "docker.tags",
        "--ref",
        "refs/tags/v1.2.3",
        "--sha",
        SHA,
        "--format",
        "github",
        env={"GITHUB_OUTPUT": str(out)},
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith("before=1\nversion=1.2.3\ntags<<EOF_")
    assert f"{IMAGE}:v1.2.3\n{IMAGE}:1.2.3\n{IMAGE}:1.2\n{IMAGE}:1\n" in text
    assert "latest=false\n" in text
    json_line = next(line for line in text.splitlines() if line.startswith("json="))
    assert json.loads(json_line.removeprefix("json="))["version"] == "1.2.3"


def test_in_github_actions_the_event_payload_decides(tmp_path: Path) -> None:
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(ROOT / "tests/fixtures/github/pull_request.json"),
        "GITHUB_REF": "refs/pull/42/merge",
        "GITHUB_SHA": "e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4",
        "GITHUB_REPOSITORY": "acme/api-gateway",
    }
    done = invoke("docker.tags", "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert (document["tag_names"], document["version"]) == (["pr-42"], "pr-42-a1b2c3d")


@pytest.mark.parametrize("no_pyc", ["1", None], ids=["PYTHONDONTWRITEBYTECODE=1", "unset"])
def test_the_pipeline_library_gets_bytecode_but_tasks_py_does_not(
    tmp_path: Path, no_pyc: str | None
) -> None:
    """Invoke turns bytecode writing off for tasks.py; tasks.py turns it back on for pipeline/,
    as Python's own setting says, and keeps the parsed pyproject.toml the same way."""
    shutil.copytree(
        ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("*.pyc")
    )
    shutil.copy(ROOT / "tasks.py", tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INVOKE_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if no_pyc:
        env["PYTHONDONTWRITEBYTECODE"] = no_pyc
    flags = ["--ref", "main", "--sha", SHA, "--format", "json"]
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(tmp_path), "docker.tags", *flags],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == "dev-main-0123456"
    beside_tasks = sorted(p.name for p in tmp_path.glob("__pycache__/*"))
    assert beside_tasks == ([] if no_pyc else ["pyproject.toml.json"])
    cached = sorted(
        str(p.parent.parent.relative_to(tmp_path / "pipeline") / p.name.split(".")[0])
        for p in tmp_path.glob("pipeline/**/__pycache__/*.pyc")
    )
    assert cached == (
        []
        if no_pyc
        else [
            "__init__",
            "clock",
            "config",
            "errors",
            "flags",
            "gitref",
            "oci/__init__",
            "oci/labels",
            "oci/name",
            "oci/platform",
            "project",
            "redact",
            "release/__init__",
            "release/tags",
        ]
    )


def test_loading_the_tasks_moves_everything_loaded_out_of_the_collectors_sight() -> None:
    """tasks.py ends with gc.freeze(): Invoke, its imports and the namespace are never walked
    again, neither by the collections during a task nor by the full one at exit."""
    program = (
        "import contextlib, gc, io\n"
        "from invoke.main import program\n"
        "before = gc.get_freeze_count()\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    program.run(['invoke', '--list'], exit=False)\n"
        "print(before, gc.get_freeze_count() > 10_000, len(gc.get_objects()) < 5_000)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.split() == ["0", "True", "True"]
