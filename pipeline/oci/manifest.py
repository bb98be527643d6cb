"""Manifests, indexes and OCI layouts: media types, platforms of an index, sizes (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.oci.platform import platform_of

OCI_INDEX = "application/vnd.oci.image.index.v1+json"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)

MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))


def index_images(index: Mapping[str, Any]) -> dict[str, str]:
    """``{platform: digest}`` of the image manifests an OCI index lists (pure); attestation
    manifests (``vnd.docker.reference.type``) and ``unknown`` platforms are left out."""
    result: dict[str, str] = {}
    for entry in index.get("manifests") or []:
        annotations = entry.get("annotations") or {}
        if annotations.get("vnd.docker.reference.type") == "attestation-manifest":
            continue
        platform = platform_of(entry.get("platform") or {})
        if platform and not platform.startswith("unknown"):
            result[platform] = str(entry.get("digest", ""))
    return result


@dataclass(frozen=True)
class Manifest:
    """A manifest's exact bytes, its media type and digest."""

    digest: str
    media_type: str
    body: bytes

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def json(self) -> dict[str, Any]:
        data = json.loads(self.body)
        return data if isinstance(data, dict) else {}

    def platforms(self) -> list[str]:
        """The image platforms of an index (attestation manifests left out)."""
        return list(self.images())

    def images(self) -> dict[str, str]:
        """``{platform: manifest digest}`` of an index's images, attestation manifests left
        out: what identifies the image itself, whatever provenance a build attached."""
        return index_images(self.json())

    def attestations(self) -> list[str]:
        """Digests of the buildx attestation manifests (provenance, SBOM) in an index."""
        return [
            str(entry.get("digest"))
            for entry in self.json().get("manifests", [])
            if (entry.get("annotations") or {}).get("vnd.docker.reference.type")
            == "attestation-manifest"
        ]

    def children(self) -> list[tuple[str, str]]:
        """``(digest, media type)`` of every manifest an index lists."""
        return [
            (str(e.get("digest")), str(e.get("mediaType", "")))
            for e in self.json().get("manifests", [])
        ]


def manifest_size(manifest: Mapping[str, Any]) -> int:
    """Config plus layers, in compressed bytes, as the manifest lists them."""
    config = manifest.get("config") or {}
    layers = manifest.get("layers") or []
    return int(config.get("size", 0)) + sum(int(layer.get("size", 0)) for layer in layers)


def layout_sizes(files: Mapping[str, bytes]) -> dict[str, int]:
    """Per-platform sizes from an OCI layout's ``index.json`` and small blobs (pure)."""

    def blob(digest: str) -> dict[str, Any]:
        algorithm, _, hexdigest = digest.partition(":")
        data = files.get(f"blobs/{algorithm}/{hexdigest}")
        return json.loads(data) if data else {}

    sizes: dict[str, int] = {}

    def walk(descriptor: Mapping[str, Any], platform: str) -> None:
        node = blob(str(descriptor.get("digest", "")))
        if not node:
            return
        if node.get("mediaType") in INDEX_TYPES or "manifests" in node:
            for child in node.get("manifests") or []:
                walk(child, platform_of(child.get("platform") or {}))
            return
        if "layers" in node:
            if not platform:  # a single-platform image: its config says which
                platform = platform_of(blob(str((node.get("config") or {}).get("digest", ""))))
            if platform and not platform.startswith("unknown"):
                sizes[platform] = manifest_size(node)

    top = json.loads(files.get("index.json", b"{}") or b"{}")
    for descriptor in top.get("manifests") or []:
        walk(descriptor, platform_of(descriptor.get("platform") or {}))
    return sizes


def layout_images(files: Mapping[str, bytes]) -> dict[str, str]:
    """``{platform: manifest digest}`` of the image an OCI layout (``docker save``) holds,
    attestation manifests left out (pure)."""

    def blob(digest: str) -> dict[str, Any]:
        algorithm, _, hexdigest = digest.partition(":")
        data = files.get(f"blobs/{algorithm}/{hexdigest}")
        node = json.loads(data) if data else {}
        return node if isinstance(node, dict) else {}

    top = json.loads(files.get("index.json", b"{}") or b"{}")
    for descriptor in top.get("manifests") or []:
        digest = str(descriptor.get("digest", ""))
        node = blob(digest)
        if node.get("mediaType") in INDEX_TYPES or "manifests" in node:
            return index_images(node)
        if "layers" in node:
            config = blob(str((node.get("config") or {}).get("digest", "")))
            return {platform_of(config): digest}
    return {}
