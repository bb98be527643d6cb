"""registry.dockerauth: docker login lands in a temporary DOCKER_CONFIG, removed at the end."""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import pytest
from tinyimages import tiny_image

from pipeline.build.record import BuildRecord
from pipeline.registry.client import RegistryClient
from pipeline.registry.dockerauth import docker_env, temporary_docker_config
from pipeline.registry.retry import RetryPolicy
from pipeline.release.push import push_record

FAST = RetryPolicy(attempts=2, max_seconds=10, initial=0.01, max_wait=0.05, jitter=0.01)


def test_the_temporary_config_is_private_keeps_settings_drops_credentials_and_goes_away(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    (home / ".docker" / "contexts").mkdir(parents=True)
    user = {"auths": {"ghcr.io": {"auth": "c2VjcmV0"}}, "credsStore": "desktop", "proxies": {}}
    (home / ".docker" / "config.json").write_text(json.dumps(user))
    with temporary_docker_config({"HOME": str(home)}) as directory:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert json.loads((directory / "config.json").read_text()) == {"proxies": {}}
        assert (directory / "contexts").resolve() == home / ".docker" / "contexts"
        assert docker_env({"PATH": "/bin"}) == {"PATH": "/bin", "DOCKER_CONFIG": str(directory)}
    assert not directory.exists()
    assert docker_env({"PATH": "/bin"}) == {"PATH": "/bin"}
    assert json.loads((home / ".docker" / "config.json").read_text()) == user


@pytest.mark.engine
def test_a_push_that_signs_logs_in_through_a_temporary_config_and_leaves_none(
    registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real ``docker login`` (the local registry accepts any login) for what runs before
    the moving tags (cosign reads ``DOCKER_CONFIG``); the upload itself is the registry
    client's. ``~/.docker/config.json`` is the test's own HOME."""
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text("{}")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    repo = f"test/{uuid.uuid4().hex[:12]}"
    client = RegistryClient(registry, retry=FAST)
    new = tiny_image(client, repo, "1.0.0", tags=("v1.0.0",))
    path = tmp_path / "image.toml"
    BuildRecord(
        image=f"{registry}/{repo}",
        version="1.0.0",
        tags=["v1.0.0", "1.0.0", "1.0", "1"],
        platforms=["linux/amd64"],
        immutable=["v1.0.0", "1.0.0"],
        ref="refs/tags/v1.0.0",
    ).write(path)
    lines: list[str] = []
    environ = {**os.environ, "REGISTRY_USERNAME": "ci-bot", "REGISTRY_PASSWORD": "s3cr3t-pw"}
    seen: list[dict[str, object]] = []

    def before_moving(digest: str) -> None:
        config = Path((docker_env(None) or {})["DOCKER_CONFIG"]) / "config.json"
        seen.append(json.loads(config.read_text()))

    push_record(
        path,
        extra={},
        environ=environ,
        client=client,
        inspect=lambda ref: new.digest,
        before_moving=before_moving,
        log=lines.append,
    )
    assert [list(config.get("auths", {})) for config in seen] == [[registry]]  # type: ignore[call-overload]
    assert client.digest(repo, "1") == new.digest
    assert json.loads((home / ".docker" / "config.json").read_text()) == {}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("pipeline-docker-")] == []
    assert "s3cr3t-pw" not in path.read_text() + "\n".join(lines)
