"""The container engine's door: the docker CLI's name, a python-on-whales client, and the one
translation of an engine failure into ``EngineError`` (an unreachable daemon says so).

``pipeline.engine`` is the only package that talks to the docker CLI, through python-on-whales
where it has the call; this module is the only one that spells the CLI's name.
"""

from __future__ import annotations

from collections.abc import Sequence

from python_on_whales import DockerClient, DockerException

from pipeline.errors import EngineError
from pipeline.proc import run

DOCKER = "docker"
#: buildx's driver that builds into the daemon's own image store.
DOCKER_DRIVER = DOCKER
UNREACHABLE_HINT = "start Docker, or set DOCKER_HOST"


def docker(host: str | None = None) -> DockerClient:
    """A client for the engine of ``DOCKER_HOST``/the current context (or ``host``)."""
    return DockerClient(host=host) if host else DockerClient()


def stderr_of(exc: DockerException) -> str:
    return (exc.stderr or exc.stdout or "").strip()


def fail(exc: DockerException, message: str, hint: str = "") -> EngineError:
    """A python-on-whales failure as an ``EngineError``; an unreachable daemon says so."""
    err = stderr_of(exc)
    if is_unreachable(err):
        return EngineError(
            "the Docker daemon is unreachable",
            argv=exc.docker_command,
            returncode=exc.return_code,
            hint=UNREACHABLE_HINT,
        )
    return EngineError(
        message, argv=exc.docker_command, returncode=exc.return_code, stderr=err, hint=hint
    )


def is_unreachable(stderr: str) -> bool:
    text = stderr.lower()
    return "cannot connect to the docker daemon" in text or ("error during connect" in text)


def run_cli(argv: Sequence[str], message: str) -> str:
    done = run(argv, error=EngineError, what=message)
    return done.stdout


def docker_argv(*args: str) -> list[str]:
    """``docker ARGS...``: for the few calls python-on-whales cannot make as the pipeline needs
    them (a compose project's variables as its process environment, ``imagetools create
    --dry-run``, stdin for a password)."""
    return [DOCKER, *args]
