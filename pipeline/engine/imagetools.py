"""``docker buildx imagetools``: a pushed image as its registry holds it, without pulling: THE
digest lookup of the pipeline (``remote_digest``), manifests, sizes, and composing an index."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from python_on_whales import DockerClient

from pipeline.engine.cli import docker, docker_argv, run_cli
from pipeline.errors import CommandError, EngineError, RegistryError
from pipeline.oci.manifest import (
    INDEX_TYPES,
    index_images,
    manifest_size,
)
from pipeline.oci.platform import platform_of
from pipeline.oci.reference import parse_reference
from pipeline.proc import run


def remote_digest(
    reference: str, client: DockerClient | None = None
) -> tuple[str, tuple[str, ...]]:
    """THE digest lookup: the digest of ``reference`` in its registry (an index's for a
    multi-platform image) and the image platforms that index lists, without pulling it."""
    manifest = raw_manifest(reference, client)
    digest = manifest.get("digest")
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise EngineError(f"the registry returned no digest for {reference}")
    return digest, tuple(index_images(manifest))


def index_digest(reference: str, client: DockerClient | None = None) -> str:
    """``remote_digest``'s digest alone."""
    return remote_digest(reference, client)[0]


def raw_manifest(reference: str, client: DockerClient | None = None) -> dict[str, Any]:
    """The manifest (or index) of ``reference`` as the registry has it, with its digest."""
    client = client or docker()
    argv = [*client.client_config.docker_cmd, "buildx", "imagetools", "inspect"]
    argv += ["--format", "{{json .Manifest}}", reference]
    text = run_cli(argv, f"cannot inspect {reference} in its registry")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EngineError(f"unreadable manifest for {reference} ({exc})") from None
    if not isinstance(data, dict):
        raise EngineError(f"unreadable manifest for {reference}")
    return data


def registry_sizes(reference: str, client: DockerClient | None = None) -> dict[str, int]:
    """Compressed bytes (config + layers) per platform of an image in a registry."""
    client = client or docker()
    top = raw_manifest(reference, client)
    repository = parse_reference(reference).name
    sizes: dict[str, int] = {}
    if top.get("mediaType") not in INDEX_TYPES:
        image = _raw(reference, client)
        return {"": manifest_size(image)}
    for entry in top.get("manifests") or []:
        platform = platform_of(entry.get("platform") or {})
        if not platform or platform.startswith("unknown"):
            continue  # attestation manifests
        sizes[platform] = manifest_size(_raw(f"{repository}@{entry['digest']}", client))
    return sizes


def _raw(reference: str, client: DockerClient) -> dict[str, Any]:
    argv = [*client.client_config.docker_cmd, "buildx", "imagetools", "inspect", "--raw"]
    text = run_cli([*argv, reference], f"cannot inspect {reference} in its registry")
    data = json.loads(text)
    return data if isinstance(data, dict) else {}


def imagetools_composer(timeout: float | None = 300) -> Callable[[Sequence[str]], bytes]:
    """``docker buildx imagetools create --dry-run SOURCE...``: the index it would push."""

    def compose(sources: Sequence[str]) -> bytes:
        try:
            done = run(
                docker_argv("buildx", "imagetools", "create", "--dry-run", *sources),
                timeout=timeout,
                error=RegistryError,
                what="docker buildx imagetools create",
                hint="check that every digest is in the registry and readable",
            )
        except CommandError as exc:
            raise RegistryError(
                exc.message, argv=exc.argv, stderr=exc.stderr, hint=exc.hint
            ) from None
        text = done.stdout
        return (text[:-1] if text.endswith("\n") else text).encode()

    return compose
