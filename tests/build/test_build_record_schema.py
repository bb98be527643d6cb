"""build.record: the build record is a schema checked on read; a hand-edited or truncated record
is refused in one line naming the field (exit 2), before anything is pushed."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import tomli_w

from pipeline.build.record import BuildRecord, RecordError

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "127.0.0.1:5000/test/record"


def release(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "schema": 1,
        "image": IMAGE,
        "version": "1.2.3",
        "tags": ["v1.2.3", "1.2.3", "1.2", "1"],
        "platforms": ["linux/amd64", "linux/arm64"],
        "immutable": ["v1.2.3", "1.2.3"],
        "ref": "refs/tags/v1.2.3",
        "labels": {"org.opencontainers.image.version": "1.2.3"},
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def branch(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "schema": 1,
        "image": IMAGE,
        "version": "dev-main-abc1234",
        "tags": ["latest", "main-abc1234"],
        "platforms": ["linux/amd64"],
        "unique": ["main-abc1234"],
        "ref": "refs/heads/main",
    }
    data.update(changes)
    return data


def write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "image.toml"
    path.write_text(tomli_w.dumps(data))
    return path


BAD = [
    (release(image=None), "field 'image' is missing"),
    (release(version=318), "field 'version' must be a string, not the number 318"),
    (release(tags=[]), "field 'tags' is empty: a build has at least one tag"),
    (
        release(platforms="linux/amd64"),
        "field 'platforms' must be a list of strings, not the string 'linux/amd64'",
    ),
    (
        release(immutable=["v9.9.9"]),
        "field 'immutable' holds 'v9.9.9', which is not one of the record's tags",
    ),
    (
        release(tags=["v9.9.9", "1.2.3"], immutable=["v9.9.9", "1.2.3"]),
        "field 'immutable' holds 'v9.9.9', which is not the version 1.2.3",
    ),
    (
        release(version="9.9.9", immutable=["9.9.9"], tags=["9.9.9"]),
        "field 'version' is '9.9.9', but the ref refs/tags/v1.2.3 is version 1.2.3",
    ),
    (
        branch(immutable=["latest"]),
        "field 'immutable' holds 'latest', but the ref refs/heads/main is not a release tag",
    ),
    (
        release(labels={"org.opencontainers.image.version": "2.0.0"}),
        "field 'version' is '1.2.3', but the image's version label is '2.0.0'",
    ),
    (
        release(image=f"{IMAGE}:v1"),
        f"field 'image' must be a name without a tag or digest, not '{IMAGE}:v1'",
    ),
    (
        release(platforms=["linux"]),
        "field 'platforms' holds an invalid platform (platforms: 'linux' is not OS/ARCH[/VARIANT])",
    ),
    (release(pushed="yes"), "field 'pushed' must be a boolean, not the string 'yes'"),
    (release(digest="sha256:abc"), "field 'digest' is not a sha256 digest: 'sha256:abc'"),
]


@pytest.mark.parametrize(("data", "problem"), BAD, ids=[p for _, p in BAD])
def test_a_bad_record_is_refused_in_one_line_naming_the_field(
    tmp_path: Path, data: dict[str, object], problem: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(RecordError) as caught:
        BuildRecord.read(path)
    assert caught.value.one_line() == f"{path}: {problem}: rebuild (docker.build)"
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    "data",
    [release(), branch(), release(ref=None), release(ref="refs/tags/v1.2.3+build.5")],
    ids=["release", "branch", "no ref", "build metadata"],
)
def test_a_record_that_agrees_with_its_ref_is_read(tmp_path: Path, data: dict[str, object]) -> None:
    record = BuildRecord.read(write(tmp_path, data))
    assert record.image == IMAGE


@pytest.mark.parametrize(
    "task", ["docker.push", "docker.sign", "docker.promote --to staging", "docker.test"]
)
def test_a_task_given_a_hand_edited_record_exits_2_and_pushes_nothing(
    tmp_path: Path, task: str
) -> None:
    image = f"127.0.0.1:5000/test/{uuid.uuid4().hex[:12]}"
    path = write(tmp_path, release(image=image, immutable=["v9.9.9"], digest="sha256:" + "a" * 64))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INVOKE_"))}
    env["COSIGN_PUBLIC_KEY"] = "unused"
    done = subprocess.run(
        [sys.executable, "-m", "invoke", *task.split(), "--record", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"error: {path}: field 'immutable' holds 'v9.9.9', which is not one of the record's "
        "tags: rebuild (docker.build)\n"
    )
