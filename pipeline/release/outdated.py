"""``docker.outdated``: is the base image an image was built on still what its tag points at?

The base is named by ``org.opencontainers.image.base.name`` and pinned by
``org.opencontainers.image.base.digest`` (labels of the image config, or the build record's
``base_name``/``base_digest``). The tag is resolved now in its registry (through a mirror for
Docker Hub when one is configured); a different digest means a newer base exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.build.record import BuildRecord
from pipeline.config import Settings
from pipeline.errors import EngineError, RegistryError, UsageError
from pipeline.oci.reference import DOCKER_HUB, Reference, is_digest, parse_reference
from pipeline.registry.client import RegistryClient
from pipeline.registry.transport import NotFoundError

BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"


@dataclass(frozen=True)
class Base:
    name: str
    digest: str


@dataclass(frozen=True)
class Status:
    base: str
    recorded: str
    current: str
    outdated: bool
    since: str = ""

    def line(self) -> str:
        if not self.outdated:
            return f"current: {self.base} is still {self.recorded}"
        when = f" since {self.since}" if self.since else ""
        return (
            f"outdated: {self.base} now points at {self.current}{when}; "
            f"the image was built on {self.recorded}"
        )


def base_from_labels(labels: Mapping[str, str], where: str) -> Base:
    name, digest = labels.get(BASE_NAME, ""), labels.get(BASE_DIGEST, "")
    if not name or not is_digest(digest):
        raise UsageError(
            f"{where} does not record its base ({BASE_NAME} and {BASE_DIGEST} labels)",
            hint="rebuild with `invoke docker.build`, which records them",
        )
    return Base(name, digest)


def base_from_record(record: BuildRecord) -> Base:
    if record.base_name and is_digest(record.base_digest):
        return Base(record.base_name, record.base_digest)
    return base_from_labels(record.labels, f"the build record of {record.image}")


def base_from_config(config: Mapping[str, Any], where: str) -> Base:
    inner = config.get("config")
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    return base_from_labels(labels if isinstance(labels, dict) else {}, where)


def base_reference(name: str, mirrors: Mapping[str, str]) -> Reference:
    """The base tag to resolve, through the configured mirror of its host if any."""
    ref = parse_reference(name)
    host = mirrors.get(ref.host, ref.host)
    return Reference(host, ref.repository, ref.tag or "latest", "")


def hub_mirror(urls: Sequence[str]) -> dict[str, str]:
    """``{"docker.io": host}`` from the daemon's registry mirrors (``http://127.0.0.1:5000/``)."""
    for url in urls:
        host = url.split("://", 1)[-1].strip("/")
        if host:
            return {DOCKER_HUB: host}
    return {}


def check(
    base: Base,
    client_for: Callable[[str], RegistryClient],
    mirrors: Mapping[str, str] | None = None,
) -> Status:
    """Compare the recorded base digest with what the base tag points at now."""
    ref = base_reference(base.name, mirrors or {})
    client = client_for(ref.host)
    try:
        manifest = client.manifest(ref.repository, ref.tag)
    except NotFoundError:
        raise NotFoundError(
            f"base image {ref} does not exist (any more)",
            hint="check the org.opencontainers.image.base.name label",
        ) from None
    children = {digest for digest, _ in manifest.children()} if manifest.is_index else set()
    if base.digest == manifest.digest or base.digest in children:
        return Status(base.name, base.digest, manifest.digest, False)
    since = ""
    try:
        created = client.image_config(ref.repository, manifest.digest).get("created")
        since = str(created or "")
    except RegistryError:
        since = ""
    return Status(base.name, base.digest, manifest.digest, True, since)


def config_of(client: RegistryClient, ref: Reference) -> dict[str, Any]:
    """The image config of a pushed reference (its labels say what base it was built on)."""
    try:
        return client.image_config(ref.repository, ref.ref)
    except NotFoundError:
        raise NotFoundError(f"{ref} is not in the registry", hint="check --ref") from None


def outdated_status(
    ref: str | None, record_path: Path, *, settings: Settings, environ: Mapping[str, str]
) -> Status:
    """``docker.outdated``: the base of a pushed image (its config's labels) or of the last
    build record, checked against its registry; Docker Hub through the daemon's mirror unless
    ``[tool.pipeline] mirrors`` names one (no daemon: Docker Hub itself)."""
    from pipeline.registry.client import client_for

    def client(host: str) -> RegistryClient:
        return client_for(host, extra=settings.extra, environ=environ)

    if ref:
        target = parse_reference(ref)
        base = base_from_config(config_of(client(target.host), target), str(target))
    else:
        base = base_from_record(BuildRecord.read(record_path))
    mirrors = dict(settings.extra.get("mirrors", {}) or {})
    if parse_reference(base.name).host == DOCKER_HUB and DOCKER_HUB not in mirrors:
        from pipeline.engine import daemon_info

        with suppress(EngineError):
            mirrors.update(hub_mirror(daemon_info().mirrors))
    return check(base, client, mirrors)
