"""A docker client logged in to one registry for the length of a ``with`` block: ``docker
--config <temporary DOCKER_CONFIG> login --password-stdin`` (the password never in argv), the
directory removed afterwards, so no credential is left behind in a file. Without credentials,
the plain client."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from python_on_whales import DockerClient

from pipeline.engine.cli import docker
from pipeline.errors import CommandError, RegistryError
from pipeline.proc import run
from pipeline.registry.auth import Credentials
from pipeline.registry.dockerauth import temporary_docker_config
from pipeline.registry.retry import (
    RetryPolicy,
    TransientRegistryError,
    call_with_retry,
    is_transient,
)

_REFUSED = re.compile(r"unauthorized|denied|forbidden|\b401\b|\b403\b", re.IGNORECASE)


@contextmanager
def logged_in(
    host: str,
    credentials: Credentials | None,
    *,
    retry: RetryPolicy,
    environ: Mapping[str, str],
) -> Iterator[DockerClient]:
    """A client whose registry calls (``imagetools``...) carry ``credentials`` for ``host``,
    logged in to the one temporary ``DOCKER_CONFIG`` kind (``registry.dockerauth``)."""
    if credentials is None:
        yield docker()
        return
    with temporary_docker_config(environ) as config:
        client = DockerClient(config=str(config))
        argv = [*client.client_config.docker_cmd, "login", host]
        argv += ["--username", credentials.username, "--password-stdin"]

        def attempt() -> None:
            try:
                run(argv, input=credentials.password, error=RegistryError, what="docker login")
            except CommandError as exc:
                kind = TransientRegistryError if is_transient(exc.stderr) else RegistryError
                raise login_failure(host, exc.stderr, kind) from None

        call_with_retry(attempt, retry)
        yield client


def login_failure(
    host: str, stderr: str, kind: type[RegistryError] = RegistryError
) -> RegistryError:
    """The one-line error of a failed ``docker login``: a refusal points at the credentials,
    anything else at the host and the network."""
    refused = bool(_REFUSED.search(stderr)) or not stderr
    return kind(
        f"docker login to {host} failed",
        stderr=stderr,
        hint="check REGISTRY_USERNAME/REGISTRY_PASSWORD (or GITHUB_TOKEN for ghcr.io)"
        if refused
        else "check the registry host and the network",
    )
