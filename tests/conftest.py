"""Shared fixtures. Tests marked ``engine`` need the real Docker engine and the registry on
127.0.0.1:5000; without them they fail (never skip), because CI must not pass without them."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# One project image per session (``built_image``), shared by every test that needs it.
pytest_plugins = ["fixtures_image"]

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "127.0.0.1:5000"
FIXTURES = ROOT.parent / "shared" / "fixtures"


def _engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return "the Docker daemon is unreachable (run ../shared/engine/provision.sh)"
    try:
        urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=5).close()
    except OSError as exc:
        return f"the registry on {REGISTRY} is unreachable ({exc})"
    return None


@pytest.fixture(scope="session")
def engine_ready() -> None:
    problem = _engine_problem()
    if problem:
        pytest.fail(f"engine tests need the engine: {problem}", pytrace=False)


@pytest.fixture(autouse=True)
def _require_engine(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("engine"):
        request.getfixturevalue("engine_ready")


@pytest.fixture(scope="session")
def registry() -> str:
    """The registry's host:port (the engine's Docker Hub mirror as well)."""
    return REGISTRY


@pytest.fixture
def scratch_repo(registry: str) -> str:
    """A repository name no other test uses: ``127.0.0.1:5000/test/<random>``."""
    return f"{registry}/test/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def trivy_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A writable copy of the tiny Trivy database: use it as TRIVY_CACHE_DIR."""
    target = tmp_path_factory.mktemp("trivy-cache")
    shutil.copytree(FIXTURES / "trivy-db", target, dirs_exist_ok=True)
    yield target
