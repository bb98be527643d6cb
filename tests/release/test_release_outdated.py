"""docker.outdated: the recorded base digest against what the base tag points at now."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from faultproxy import push_image

from pipeline.build.record import BuildRecord
from pipeline.errors import UsageError
from pipeline.oci.reference import Reference
from pipeline.release.outdated import (
    BASE_DIGEST,
    BASE_NAME,
    Base,
    Status,
    base_from_config,
    base_from_record,
    base_reference,
)

ROOT = Path(__file__).resolve().parents[2]
OLD, NEW = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_the_line_says_which_base_moved_and_since_when() -> None:
    status = Status("python:3.11-slim", OLD, NEW, True, "2026-11-29T10:00:00Z")
    assert status.line() == (
        f"outdated: python:3.11-slim now points at {NEW} since 2026-11-29T10:00:00Z; "
        f"the image was built on {OLD}"
    )
    assert Status("b:1", OLD, OLD, False).line() == f"current: b:1 is still {OLD}"


def test_the_base_comes_from_the_record_or_from_the_image_labels() -> None:
    record = BuildRecord("i", "1", ["t"], [], base_name="python:3.11-slim", base_digest=OLD)
    assert base_from_record(record) == Base("python:3.11-slim", OLD)
    labelled = BuildRecord("i", "1", ["t"], [], labels={BASE_NAME: "b:1", BASE_DIGEST: NEW})
    assert base_from_record(labelled) == Base("b:1", NEW)
    config = {"config": {"Labels": {BASE_NAME: "b:2", BASE_DIGEST: OLD}}}
    assert base_from_config(config, "x") == Base("b:2", OLD)
    with pytest.raises(UsageError, match="x does not record its base"):
        base_from_config({"config": {"Labels": {BASE_NAME: "b:2"}}}, "x")


def test_docker_hub_bases_are_resolved_through_the_configured_mirror() -> None:
    mirrors = {"docker.io": "127.0.0.1:5000"}
    assert base_reference("docker.io/library/python:3.11-slim", mirrors) == Reference(
        "127.0.0.1:5000", "library/python", "3.11-slim"
    )
    assert base_reference("python", {}) == Reference("docker.io", "library/python", "latest")


# --- against the real registry ---


def outdated(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "docker.outdated", *args],
        cwd=ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.engine
def test_an_image_on_a_re_pushed_base_is_outdated_until_rebuilt(
    scratch_repo: str, tmp_path: Path
) -> None:
    base = f"{scratch_repo}/base:1"
    app = f"{scratch_repo}/app"
    platforms = ("linux/amd64",)
    first = push_image(base, tmp_path, platforms=platforms)
    labels = {BASE_NAME: base, BASE_DIGEST: first}
    push_image(f"{app}:1", tmp_path, base=base, labels=labels, platforms=platforms)

    current = outdated("--ref", f"{app}:1")
    assert (current.returncode, current.stdout) == (0, f"current: {base} is still {first}\n")

    second = push_image(base, tmp_path, platforms=platforms)  # new content, same tag
    stale = outdated("--ref", f"{app}:1")
    assert stale.returncode == 1
    assert stale.stdout.startswith(f"outdated: {base} now points at {second} since 20")
    assert stale.stdout.endswith(f"; the image was built on {first}\n")

    record = tmp_path / "image.toml"
    BuildRecord(app, "1", ["1"], list(platforms), base_name=base, base_digest=first).write(record)
    assert outdated("--record", str(record)).returncode == 1

    labels = {BASE_NAME: base, BASE_DIGEST: second}
    push_image(f"{app}:2", tmp_path, base=base, labels=labels, platforms=platforms)
    rebuilt = outdated("--ref", f"{app}:2")
    assert (rebuilt.returncode, rebuilt.stdout) == (0, f"current: {base} is still {second}\n")


@pytest.mark.engine
def test_an_unknown_image_is_one_line(scratch_repo: str) -> None:
    done = outdated("--ref", f"{scratch_repo}:nope")
    assert done.returncode == 1
    assert done.stderr == f"error: {scratch_repo}:nope is not in the registry: check --ref\n"
