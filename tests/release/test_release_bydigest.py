"""docker.push --by-digest: the tested one-platform image, uploaded by digest with no tag."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.build.record import BuildRecord
from pipeline.engine.image import local_images
from pipeline.errors import UsageError
from pipeline.oci.reference import parse_reference
from pipeline.registry.client import RegistryClient
from pipeline.release.bydigest import check_pushable

ROOT = Path(__file__).resolve().parents[2]
LOADED = BuildRecord(
    image="ghcr.io/acme/app", version="1.2.3", tags=["v1.2.3"], platforms=["linux/arm64"]
)


def test_a_loaded_one_platform_record_is_pushable_as_its_platform() -> None:
    assert check_pushable(replace(LOADED, loaded=True)) == "linux/arm64"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            replace(LOADED, loaded=True, platforms=["linux/amd64", "linux/arm64"]),
            "--by-digest pushes one platform; the build record has 2 (linux/amd64, linux/arm64):"
            " build each platform on its own: invoke docker.build --platform OS/ARCH",
        ),
        (
            LOADED,
            "--by-digest pushes the image in the local store; ghcr.io/acme/app:v1.2.3 was not"
            " loaded: build it with invoke docker.build --load (the default for one platform)",
        ),
    ],
)
def test_a_record_that_cannot_be_pushed_by_digest_is_one_usage_error(
    record: BuildRecord, message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        check_pushable(record)
    assert (caught.value.one_line(), caught.value.exit_code) == (message, 2)


@pytest.mark.engine
def test_the_tested_image_goes_up_by_digest_with_no_tag_and_its_digest_file_is_written(
    built_image_record: Path, scratch_repo: str, tmp_path: Path
) -> None:
    built = BuildRecord.read(built_image_record)
    record = tmp_path / "image.toml"
    replace(built, image=scratch_repo).write(record)
    local = f"{scratch_repo}:{built.tags[0]}"
    subprocess.run(["docker", "tag", built.reference, local], check=True)
    argv = [sys.executable, "-m", "invoke", "docker.push", "--by-digest", "--record", str(record)]
    try:
        done = subprocess.run(
            [*argv, "--digests-dir", str(tmp_path / "digests")],
            cwd=ROOT,
            env=os.environ,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        subprocess.run(["docker", "rmi", local], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    platform = built.platforms[0]
    (digest_file,) = (tmp_path / "digests").iterdir()
    assert digest_file.name == platform.replace("/", "-")
    digest = digest_file.read_text().strip()
    assert done.stdout.splitlines() == [
        f"digest={digest}",
        f"platforms={platform}",
        f"digest_file={digest_file}",
    ]
    assert digest == built.digest, "the very image that was built and tested"
    client = RegistryClient("127.0.0.1:5000")
    repo = parse_reference(scratch_repo).repository
    assert client.manifest(repo, digest).images() == local_images(built.reference)
    assert client.tags(repo) == []
