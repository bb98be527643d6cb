"""Sign before moving tags on the merge path: ``docker.merge --no-moving-tags`` writes only the
immutable and unique tags, ``docker.tag-moving --digest`` writes the moving ones only onto a
digest whose cosign signature verifies. On registry:2 and on the ghcr.io model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from faultproxy import cosign_keys, push_image
from fixtures_ghcr import Remote

from pipeline.errors import UsageError
from pipeline.registry.client import RegistryClient
from pipeline.release.merge import record_for
from pipeline.release.tagmoving import tag_moving
from pipeline.release.tags import compute_tags

ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456" + "0" * 33


def test_a_moving_tag_target_that_is_not_a_digest_is_a_usage_error() -> None:
    from pipeline.config import Settings
    from pipeline.gitref import ReleaseContext

    context = ReleaseContext(event="push", ref="refs/heads/main", sha=SHA)
    planned = record_for(compute_tags(context, Settings(image="ghcr.io/acme/x")), context, [])
    never = RegistryClient("127.0.0.1:9")  # nothing may be asked
    with pytest.raises(UsageError, match="--digest 'latest': expected sha256:"):
        tag_moving(planned, "latest", never, verified=lambda _: True)


@pytest.fixture
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return cosign_keys(tmp_path_factory.mktemp("keys"))


def _invoke(remote: Remote, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env={**remote.env, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.engine
def test_moving_tags_are_never_seen_on_an_unsigned_digest_even_when_signing_fails(
    remote: Remote, tmp_path: Path, keys: dict[str, str]
) -> None:
    client = remote.client()
    repo = remote.repository
    index = push_image(f"{remote.ref}:src", tmp_path)
    sources = client.manifest(repo, index).images()
    flags = ["--ref", "main", "--sha", SHA, "--image", remote.ref]

    def tags() -> dict[str, str | None]:
        return {t: client.digest(repo, t) for t in client.tags(repo) if t != "src"}

    merged = _invoke(
        remote,
        "docker.merge",
        *[f"--digest={d}" for d in sources.values()],
        *flags,
        "--no-moving-tags",
        "--record",
        str(tmp_path / "image.toml"),
        env={},
    )
    assert merged.returncode == 0, merged.stderr
    lines = merged.stdout.splitlines()
    digest = next(line for line in lines if line.startswith("digest="))[len("digest=") :]
    assert "not moving latest yet: `docker.tag-moving` writes them once signed" in lines
    assert lines[-3:] == [
        f"digest={digest}",
        "tags=main-0123456",
        "platforms=linux/amd64,linux/arm64",
    ]
    assert tags() == {"main-0123456": digest}

    failed = _invoke(
        remote,
        "docker.sign",
        "--ref",
        f"{remote.ref}@{digest}",
        env={**keys, "COSIGN_PASSWORD": "not-the-password"},
    )
    assert failed.returncode != 0
    refused = _invoke(
        remote,
        "docker.tag-moving",
        "--digest",
        digest,
        *flags,
        env={"COSIGN_PUBLIC_KEY": keys["COSIGN_PUBLIC_KEY"]},
    )
    assert refused.returncode == 1
    assert refused.stderr == (
        f"error: {remote.ref}@{digest} is not signed: no moving tag written: sign it first: "
        f"`invoke docker.sign --ref {remote.ref}@{digest}`\n"
    )
    assert tags() == {"main-0123456": digest}, "no moving tag on the unsigned digest"

    signed = _invoke(remote, "docker.sign", "--ref", f"{remote.ref}@{digest}", env=keys)
    assert signed.returncode == 0, signed.stderr
    moved = _invoke(
        remote,
        "docker.tag-moving",
        "--digest",
        digest,
        *flags,
        env={"COSIGN_PUBLIC_KEY": keys["COSIGN_PUBLIC_KEY"]},
    )
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.splitlines() == [
        f"tagged {remote.ref}:latest -> {digest}",
        f"digest={digest}",
        "tags=latest",
    ]
    signature = f"sha256-{digest[7:]}.sig"
    assert tags() == {
        "main-0123456": digest,
        "latest": digest,
        signature: client.digest(repo, signature),
    }
    if remote.model is not None:
        puts = [p for m, p in remote.model.requests if m == "PUT" and "/manifests/" in p]
        assert puts.index(f"/v2/{repo}/manifests/{signature}") < puts.index(
            f"/v2/{repo}/manifests/latest"
        )
