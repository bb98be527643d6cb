"""A docker client logged in to one registry for the length of a ``with`` block: ``docker
--config <throwaway dir> login --password-stdin`` (the password never in argv), the dir removed
afterwards, so no credential is left behind in a file. Without credentials, the plain client."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from python_on_whales import DockerClient

from pipeline.engine.cli import docker
from pipeline.errors import CommandError, RegistryError
from pipeline.proc import run
from pipeline.registry.auth import Credentials
from pipeline.registry.retry import (
    RetryPolicy,
    TransientRegistryError,
    call_with_retry,
    is_transient,
)

_REFUSED = re.compile(r"unauthorized|denied|forbidden|\b401\b|\b403\b", re.IGNORECASE)


@contextmanager
def logged_in(
    host: str, credentials: Credentials | None, *, retry: RetryPolicy
) -> Iterator[DockerClient]:
    """A client whose registry calls (``imagetools``...) carry ``credentials`` for ``host``."""
    if credentials is None:
        yield docker()
        return
    with tempfile.TemporaryDirectory(prefix="pipeline-docker-config-") as config:
        client = DockerClient(config=config)
        argv = [*client.client_config.docker_cmd, "login", host]
        argv += ["--username", credentials.username, "--password-stdin"]

        def attempt() -> None:
            try:
                run(argv, input=credentials.password, error=RegistryError, what="docker login")
            except CommandError as exc:
                kind = TransientRegistryError if is_transient(exc.stderr) else RegistryError
                refused = bool(_REFUSED.search(exc.stderr)) or not exc.stderr
                raise kind(
                    f"docker login to {host} failed",
                    stderr=exc.stderr,
                    hint="check REGISTRY_USERNAME/REGISTRY_PASSWORD (or GITHUB_TOKEN for ghcr.io)"
                    if refused
                    else "check the registry host and the network",
                ) from None

        call_with_retry(attempt, retry)
        yield client
