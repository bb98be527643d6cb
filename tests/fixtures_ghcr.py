"""The ghcr.io model as fixtures (see ``ghcr_model``): ``ghcr`` (the running model) and
``remote``, a repository on plain registry:2 or on the model, with the environment a job there
has (``REMOTES`` parametrizes a test over both).

A login through the model is written to a throwaway ``DOCKER_CONFIG`` (``remote.env``), never to
the user's ~/.docker/config.json, and is gone with the test's tmp_path."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ghcr_model import GhcrFront, GhcrModel

from pipeline.registry.client import Credentials, RegistryClient, RetryPolicy

REMOTES = ("registry", "ghcr")


@pytest.fixture
def ghcr(engine_ready: None) -> Iterator[GhcrModel]:
    """A running ghcr.io model in front of the registry on 127.0.0.1:5000."""
    with GhcrFront() as model:
        yield model


@dataclass
class Remote:
    """A scratch repository (``ref``: HOST/test/<random>) and the environment that reaches it."""

    kind: str
    ref: str
    env: dict[str, str] = field(default_factory=dict)
    model: GhcrModel | None = None

    @property
    def host(self) -> str:
        return self.ref.split("/", 1)[0]

    @property
    def repository(self) -> str:
        return self.ref.split("/", 1)[1]

    def client(self, retry: RetryPolicy | None = None) -> RegistryClient:
        """The pipeline's registry client, with the model's credentials on the model."""
        creds = Credentials(self.model.user, self.model.token) if self.model else None
        return RegistryClient(self.host, credentials=creds, retry=retry)


def docker_config(tmp_path: Path) -> Path:
    """An empty Docker client config dir (logins land here, not in ~/.docker)."""
    path = tmp_path / "docker-config"
    path.mkdir(parents=True, exist_ok=True)
    home = Path.home() / ".docker" / "buildx"
    if home.is_dir() and not (path / "buildx").exists():
        (path / "buildx").symlink_to(home)
    return path


def docker_login(model: GhcrModel, env: dict[str, str]) -> None:
    """``docker login`` to the model, the token on stdin, into ``env``'s DOCKER_CONFIG."""
    done = subprocess.run(
        ["docker", "login", model.host, "--username", model.user, "--password-stdin"],
        input=model.token,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(params=REMOTES)
def remote(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    registry: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Remote]:
    """Plain registry:2, then the ghcr.io model: logged in (a throwaway DOCKER_CONFIG, set for
    the test's own docker calls too), its credentials in ``env`` for the tasks."""
    name = f"test/{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path)))
    env = dict(os.environ)
    if request.param == "registry":
        yield Remote("registry", f"{registry}/{name}", env)
        return
    model = request.getfixturevalue("ghcr")
    docker_login(model, env)
    env |= model.env() | {"INVOKE_DOCKER_REGISTRY_API": "ghcr"}
    yield Remote("ghcr", f"{model.host}/{name}", env, model)
