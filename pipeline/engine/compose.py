"""``docker compose`` for one project, and what a project leaves behind.

Compose runs through the CLI, not python-on-whales: the project's variables must reach compose
as its process environment (which wins over env files), and python-on-whales's compose takes no
environment per call. Everything else here is python-on-whales.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from python_on_whales import DockerClient, DockerException

from pipeline.engine.cli import docker, docker_argv, fail
from pipeline.errors import CommandError, EngineError
from pipeline.proc import run


def run_compose(
    project: str,
    file: Path,
    *args: str,
    env: Mapping[str, str],
    error: type[CommandError] = EngineError,
    what: str = "",
    timeout: float | None = None,
) -> str:
    """``docker compose -p PROJECT -f FILE ARGS...`` with ``env`` as its environment; stdout."""
    argv = docker_argv("compose", "-p", project, "-f", str(file), *args)
    return run(argv, env=env, error=error, what=what, timeout=timeout).stdout


def leftovers(project: str, client: DockerClient | None = None) -> list[str]:
    """Containers, networks and volumes still labelled with the compose project."""
    client = client or docker()
    label: list[tuple[Literal["label"], str]] = [("label", f"com.docker.compose.project={project}")]
    try:
        found = [f"container {c.name}" for c in client.container.list(all=True, filters=label)]
        found += [f"network {n.name}" for n in client.network.list(filters=label)]
        found += [f"volume {v.name}" for v in client.volume.list(filters=label)]
    except DockerException as exc:
        raise fail(exc, f"cannot list what compose project {project} left") from None
    return found
