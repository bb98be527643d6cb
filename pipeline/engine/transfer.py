"""Images between the local store and a registry through the docker CLI: ``login`` (the
password on stdin, never argv), ``tag``, ``push``, ``image rm``. Failures become
``RegistryError``; transient ones (classified from stderr) ``TransientRegistryError``, which the
caller retries."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.engine.cli import docker_argv
from pipeline.errors import CommandError, RegistryError
from pipeline.proc import run
from pipeline.redact import redact
from pipeline.registry.dockerauth import docker_env
from pipeline.registry.retry import TransientRegistryError, is_transient

DockerRunner = Callable[[Sequence[str], str | None], None]


def docker_cli(timeout: float | None = None, idle: float | None = None) -> DockerRunner:
    """Run the docker CLI (stdin for secrets); failures raise ``RegistryError``, transient
    ones ``TransientRegistryError`` (classified from stderr; a command silent for ``idle``
    seconds, a stalled connection, is one)."""

    def runner(argv: Sequence[str], stdin: str | None) -> None:
        try:
            run(
                docker_argv(*argv),
                input=stdin,
                env=docker_env(None),
                timeout=timeout,
                idle=idle,
                error=RegistryError,
            )
        except CommandError as exc:
            text = exc.stderr or exc.message
            kind = TransientRegistryError if is_transient(text) else RegistryError
            raise kind(
                f"docker {argv[0]} failed",
                argv=exc.argv,
                returncode=exc.returncode,
                stderr=_redact(exc.stderr or exc.message),
                hint=exc.hint,
            ) from None

    return runner


def _redact(text: str) -> str:
    return redact(text)
