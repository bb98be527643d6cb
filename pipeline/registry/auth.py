"""Registry credentials from the environment (passed in at the edge, never read here):
``REGISTRY_USERNAME``/``REGISTRY_PASSWORD``, or ``GITHUB_TOKEN`` for ghcr.io."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


def credentials_for(host: str, environ: Mapping[str, str]) -> Credentials | None:
    """``REGISTRY_USERNAME``/``REGISTRY_PASSWORD``; for ghcr.io also ``GITHUB_ACTOR``/
    ``GITHUB_TOKEN``. None when the registry needs no login."""
    user = environ.get("REGISTRY_USERNAME", "")
    password = environ.get("REGISTRY_PASSWORD", "")
    if user and password:
        return Credentials(user, password)
    if host == "ghcr.io" and environ.get("GITHUB_TOKEN"):
        return Credentials(environ.get("GITHUB_ACTOR") or "github-actions", environ["GITHUB_TOKEN"])
    return None
