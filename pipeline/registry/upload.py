"""Push an image by digest only (no tag) from an OCI layout (``docker save`` of the containerd
store): what ``docker.build --push-by-digest`` does with buildx's ``docker`` driver, which cannot
export ``push-by-digest=true`` itself ("not implemented for docker driver").

Every blob is uploaded (those the repository already has are skipped), then the manifests
reachable from the image index, children first, each PUT under its digest: the registry ends up
with exactly the bytes of the local index and no tag at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

from pipeline.errors import RegistryError
from pipeline.oci.manifest import INDEX_TYPES, OCI_MANIFEST, Manifest
from pipeline.oci.reference import digest_of
from pipeline.registry.client import RegistryClient

Log = Callable[[str], None]
MANIFEST_TYPES = (
    *INDEX_TYPES,
    OCI_MANIFEST,
    "application/vnd.docker.distribution.manifest.v2+json",
)


def layout_blobs(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """``blobs/sha256/HEX`` members of an OCI layout -> {digest: content} (pure)."""
    blobs: dict[str, bytes] = {}
    for name, data in files.items():
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "blobs":
            blobs[f"{parts[1]}:{parts[2]}"] = data
    return blobs


def manifest_of(data: bytes) -> Manifest | None:
    """The blob as a manifest or index, or None (a layer, a config, an attestation)."""
    if data[:1] != b"{" or len(data) > 4 * 1024 * 1024:
        return None
    try:
        node = json.loads(data)
    except ValueError:
        return None
    if not isinstance(node, dict) or node.get("schemaVersion") != 2:
        return None
    media_type = str(node.get("mediaType", ""))
    if media_type not in MANIFEST_TYPES:
        if "manifests" in node:
            media_type = INDEX_TYPES[0]
        elif "layers" in node:
            media_type = OCI_MANIFEST
        else:
            return None
    return Manifest(digest_of(data), media_type, data)


def upload_order(top: str, blobs: Mapping[str, bytes]) -> tuple[list[str], list[Manifest]]:
    """What to upload for the index ``top`` (pure): the plain blobs, and the manifests children
    first. A manifest the layout lacks is an error: the push would be incomplete."""
    plain: list[str] = []
    manifests: list[Manifest] = []
    seen: set[str] = set()

    def visit(digest: str) -> None:
        if digest in seen:
            return
        seen.add(digest)
        data = blobs.get(digest)
        if data is None:
            raise RegistryError(f"the saved image lacks {digest}: cannot push it by digest")
        manifest = manifest_of(data)
        if manifest is None:
            plain.append(digest)
            return
        node = manifest.json()
        for child in node.get("manifests") or []:
            visit(str(child.get("digest", "")))
        config = node.get("config") or {}
        if config.get("digest"):
            visit(str(config["digest"]))
        for layer in node.get("layers") or []:
            visit(str(layer.get("digest", "")))
        manifests.append(manifest)

    visit(top)
    return plain, manifests


def push_layout(
    files: Mapping[str, bytes],
    top: str,
    client: RegistryClient,
    repository: str,
    log: Log = print,
    *,
    tags: Sequence[str] = (),
) -> str:
    """Upload the index ``top`` of a saved OCI layout by digest, then PUT its exact bytes under
    each of ``tags`` (none: no tag at all); every request retried by ``client``. Returns
    ``top``."""
    blobs = layout_blobs(files)
    plain, manifests = upload_order(top, blobs)
    uploaded = sum(client.upload_blob(repository, d, blobs[d]) for d in plain)
    for manifest in manifests:
        client.put_manifest(repository, manifest.digest, manifest)
    log(
        f"pushed {client.host}/{repository}@{top} by digest "
        f"({uploaded}/{len(plain)} blobs uploaded, {len(manifests)} manifests)"
    )
    for tag in tags:  # children first: the index itself is the last manifest
        client.put_manifest(repository, tag, manifests[-1])
        log(f"tagged {client.host}/{repository}:{tag} -> {top}")
    return top
