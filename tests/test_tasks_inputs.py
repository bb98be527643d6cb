"""Bad input stops a task before it does anything: one line, exit 2, nothing run or retried."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from faultproxy import FaultProxy, cosign_keys
from tinyimages import tiny_image

from pipeline.build.record import BuildRecord
from pipeline.errors import UsageError
from pipeline.oci.reference import parse_reference
from pipeline.registry.client import RegistryClient
from pipeline.registry.retry import RetryPolicy
from pipeline.release.promote import promote

ROOT = Path(__file__).resolve().parent.parent
SHA = "0123456789abcdef0123456789abcdef01234567"


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INVOKE_"))}
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(ROOT), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**base, **(env or {})},
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--image", "a b"], "error: --image 'a b': an image name has no spaces"),
        (["--image", "http://ghcr.io/acme/app"], "error: --image 'http://ghcr.io/acme/app': an"),
        (["--image", "ghcr.io/acme/app:tag"], "error: --image 'ghcr.io/acme/app:tag': a tag"),
        (
            ["--ref", "refs/heads/"],
            "error: --ref 'refs/heads/': not a valid git ref (an empty branch name)",
        ),
        (["--ref", "a b"], "error: --ref 'a b': not a valid git ref (a malformed branch name)"),
    ],
)
@pytest.mark.parametrize("task", ["docker.tags", "docker.build"])
def test_a_bad_image_or_ref_exits_2_in_one_line_before_anything_runs(
    task: str, flags: list[str], line: str
) -> None:
    done = invoke(task, "--sha", SHA, *flags) if task == "docker.tags" else invoke(task, *flags)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith(line)
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_bad_promote_ref_is_a_usage_error_and_reaches_no_registry(registry: str) -> None:
    with FaultProxy(("127.0.0.1", 5000)) as proxy:
        client = RegistryClient(proxy.address, retry=RetryPolicy(attempts=5, initial=0.01))
        image = parse_reference(f"{registry}/test/x")
        with pytest.raises(UsageError, match=r"--ref 'a b': not a tag or a sha256 digest"):
            promote(client, image, "staging", "a b", verified=lambda ref: True)
        assert proxy.connections == 0


@pytest.mark.engine
def test_promote_without_image_looks_the_record_digest_up_in_the_record_repository(
    registry: str, tmp_path: Path
) -> None:
    repo = f"test/{uuid.uuid4().hex[:12]}"
    digest = tiny_image(RegistryClient(registry), repo, "built").digest
    path = tmp_path / "image.toml"
    BuildRecord(
        image=f"{registry}/{repo}",
        version="dev-main-0123456",
        tags=["main-0123456"],
        platforms=["linux/amd64"],
        unique=["main-0123456"],
        digest=digest,
        pushed=True,
        ref="refs/heads/main",
    ).write(path)
    keys = cosign_keys(tmp_path / "keys")
    env = {
        "COSIGN_PUBLIC_KEY": keys["COSIGN_PUBLIC_KEY"],
        "REGISTRY_RETRY_ATTEMPTS": "1",
        "INVOKE_DOCKER_IMAGE": "ghcr.io/acme/elsewhere",
    }
    done = invoke("docker.promote", "--to", "staging", "--record", str(path), env=env)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {registry}/{repo}@{digest} is not signed")
