"""oci.manifest: indexes and ``docker save`` layouts read without the engine (pure)."""

from __future__ import annotations

import json

from pipeline.oci.manifest import OCI_INDEX, Manifest, index_images, layout_images, layout_sizes


def test_layout_sizes_add_config_and_layers_per_platform_and_skip_attestations() -> None:
    def blob(digest: str, content: dict[str, object]) -> tuple[str, bytes]:
        return f"blobs/sha256/{digest}", json.dumps(content).encode()

    index = {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"digest": "sha256:m1", "platform": {"os": "linux", "architecture": "amd64"}},
            {
                "digest": "sha256:m2",
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            },
            {"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}},
        ],
    }
    files = dict(
        [
            ("index.json", json.dumps({"manifests": [{"digest": "sha256:idx"}]}).encode()),
            blob("idx", index),
            blob("m1", {"config": {"size": 10}, "layers": [{"size": 100}, {"size": 5}]}),
            blob("m2", {"config": {"size": 20}, "layers": [{"size": 200}]}),
            blob("att", {"config": {"size": 1}, "layers": [{"size": 1}]}),
        ]
    )
    assert layout_sizes(files) == {"linux/amd64": 115, "linux/arm64/v8": 220}


def test_a_single_platform_layout_takes_its_platform_from_the_config() -> None:
    files = {
        "index.json": json.dumps({"manifests": [{"digest": "sha256:m"}]}).encode(),
        "blobs/sha256/m": json.dumps(
            {"config": {"digest": "sha256:c", "size": 7}, "layers": [{"size": 3}]}
        ).encode(),
        "blobs/sha256/c": json.dumps({"os": "linux", "architecture": "amd64"}).encode(),
    }
    assert layout_sizes(files) == {"linux/amd64": 10}


def test_a_layout_names_its_image_manifests_by_platform_without_attestations() -> None:
    index = {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"digest": "sha256:m1", "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": "sha256:m2", "platform": {"os": "linux", "architecture": "arm64"}},
            {
                "digest": "sha256:att",
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
            },
        ],
    }
    files = {
        "index.json": json.dumps({"manifests": [{"digest": "sha256:idx"}]}).encode(),
        "blobs/sha256/idx": json.dumps(index).encode(),
    }
    assert layout_images(files) == {"linux/amd64": "sha256:m1", "linux/arm64": "sha256:m2"}


def test_a_single_platform_layout_names_its_one_manifest() -> None:
    files = {
        "index.json": json.dumps({"manifests": [{"digest": "sha256:m"}]}).encode(),
        "blobs/sha256/m": json.dumps({"config": {"digest": "sha256:c"}, "layers": []}).encode(),
        "blobs/sha256/c": json.dumps({"os": "linux", "architecture": "arm64"}).encode(),
    }
    assert layout_images(files) == {"linux/arm64": "sha256:m"}


def test_an_index_lists_its_images_by_platform_without_attestations() -> None:
    index = {
        "mediaType": OCI_INDEX,
        "manifests": [
            {"digest": "sha256:1", "platform": {"os": "linux", "architecture": "amd64"}},
            {
                "digest": "sha256:2",
                "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
            },
            {"digest": "sha256:3", "platform": {"os": "unknown", "architecture": "unknown"}},
            {
                "digest": "sha256:4",
                "platform": {"os": "linux", "architecture": "amd64"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
            },
        ],
    }
    assert index_images(index) == {"linux/amd64": "sha256:1", "linux/arm/v7": "sha256:2"}
    manifest = Manifest("sha256:x", OCI_INDEX, json.dumps(index).encode())
    assert manifest.is_index
    assert manifest.platforms() == ["linux/amd64", "linux/arm/v7"]
    assert manifest.attestations() == ["sha256:4"]
