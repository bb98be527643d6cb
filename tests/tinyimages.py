"""Tiny images written straight into the registry through its HTTP API (no engine, no build):
one config blob and an empty layer list, distinct per ``seed``; fast enough to set up a
repository per test, or per seed of a property test."""

from __future__ import annotations

import hashlib
import json

from pipeline.oci.manifest import Manifest
from pipeline.oci.reference import digest_of
from pipeline.registry.client import RegistryClient

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def tiny_image(
    client: RegistryClient,
    repository: str,
    seed: str,
    *,
    tags: tuple[str, ...] = (),
    labels: dict[str, str] | None = None,
    created: str = "",
) -> Manifest:
    """Upload a linux/amd64 image that differs by ``seed`` (and ``labels``), tag it with
    ``tags``; return its manifest (its digest is the image's)."""
    config: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"seed": seed, **(labels or {})}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    if created:
        config["created"] = created
    blob = json.dumps(config, sort_keys=True).encode()
    blob_digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    client.upload_blob(repository, blob_digest, blob)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": blob_digest,
                "size": len(blob),
            },
            "layers": [],
        }
    ).encode()
    manifest = Manifest(digest_of(body), OCI_MANIFEST, body)
    for tag in tags or (f"seed-{seed}",):
        client.put_manifest(repository, tag, manifest)
    return manifest
