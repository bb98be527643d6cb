"""Shared fixtures. Tests marked ``engine`` need the real Docker engine and the registry on
127.0.0.1:5000; without them they fail (never skip), because CI must not pass without them."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# One project image per session (``built_image``), shared by every test that needs it.
pytest_plugins = ["fixtures_image"]

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "127.0.0.1:5000"
FIXTURES = ROOT / "tests" / "fixtures"


def _engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return "the Docker daemon is unreachable (start the engine first: see README.md)"
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


# --- a local webhook receiver (notifications) ---


SECRET_PATH = "/services/T000/B000/s3cr3t-t0ken"


@dataclass
class Receiver:
    """What the local webhook received, and the statuses it answers with (then 200)."""

    statuses: list[int] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            state.bodies.append(json.loads(self.rfile.read(length)))
            state.paths.append(self.path)
            state.content_types.append(self.headers.get("Content-Type", ""))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}{SECRET_PATH}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
