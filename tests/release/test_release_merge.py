"""Per-platform pushes by digest and their merge into one tagged index: the build plan's output
spec and the merge's inputs (pure), then the real thing against the local registry."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.build.base import BaseImage
from pipeline.build.plan import (
    BuildOptions,
    BuildPlan,
    digest_file_name,
    digest_output,
    plan_build,
    write_digest_file,
)
from pipeline.build.record import BuildRecord
from pipeline.build.run import run_build
from pipeline.config import Settings
from pipeline.errors import RegistryError, UsageError
from pipeline.gitref import ReleaseContext
from pipeline.oci.labels import ImageTags
from pipeline.oci.manifest import OCI_INDEX
from pipeline.oci.reference import digest_of
from pipeline.registry.client import RegistryClient
from pipeline.registry.upload import layout_blobs, manifest_of, upload_order
from pipeline.release.merge import (
    covered_platforms,
    index_manifest,
    merge_sources,
    merge_to_record,
    missing_platforms,
    platform_of_file,
    read_digests_dir,
    record_for,
)
from pipeline.release.tagplan import TagConflictError
from pipeline.release.tags import compute_tags

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(image="ghcr.io/acme/api-gateway", platforms=("linux/amd64", "linux/arm64"))
BASE = BaseImage("docker.io/library/python:3.11-slim", "sha256:" + "ab" * 32)
TAGS = ImageTags(
    image="ghcr.io/acme/api-gateway",
    version="dev-main-0123456",
    tag_names=("latest", "main-0123456"),
    labels={"org.opencontainers.image.version": "dev-main-0123456"},
    latest=True,
    unique=("main-0123456",),
)
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def plan(**options: Any) -> BuildPlan:
    return plan_build(
        root=ROOT,
        settings=SETTINGS,
        tags=TAGS,
        options=BuildOptions(**options),
        environ={},
        host_platform="linux/amd64",
        base=BASE,
    )


# --- the build's output spec (pure) ---


def test_a_push_by_digest_outputs_one_untagged_canonical_image_with_max_provenance() -> None:
    options = plan(
        push=True, push_by_digest=True, platforms=("linux/arm64",), cache="none"
    ).buildx_options()
    assert options["output"] == {
        "type": "image",
        "name": "ghcr.io/acme/api-gateway",
        "push-by-digest": "true",
        "name-canonical": "true",
        "push": "true",
    }
    assert options["tags"] == []
    assert (options["push"], options["load"]) == (False, False)
    assert options["platforms"] == ["linux/arm64"]
    assert options["provenance"] == {"mode": "max"}


def test_a_tagged_push_has_no_digest_output() -> None:
    options = plan(push=True, platforms=("linux/amd64",), cache="none").buildx_options()
    assert "output" not in options
    assert options["tags"] == [
        "ghcr.io/acme/api-gateway:latest",
        "ghcr.io/acme/api-gateway:main-0123456",
    ]
    assert options["push"] is True


def test_with_the_docker_driver_the_image_goes_through_the_store_under_a_local_tag() -> None:
    built = plan(push=True, push_by_digest=True, platforms=("linux/arm64",), cache="none")
    options = replace(built, via_store=True).buildx_options()
    assert "output" not in options
    assert options["tags"] == ["ghcr.io/acme/api-gateway:pipeline-digest-linux-arm64"]
    assert (options["push"], options["load"]) == (False, True)
    assert options["provenance"] == {"mode": "max"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"push_by_digest": True, "platforms": ("linux/amd64",)}, "--push-by-digest needs --push"),
        (
            {"push": True, "load": True, "push_by_digest": True, "platforms": ("linux/amd64",)},
            "--push-by-digest cannot --load: the image goes to the registry only",
        ),
        (
            {"push": True, "push_by_digest": True, "platforms": ("linux/amd64,linux/arm64",)},
            "--push-by-digest builds one platform per job, not 2 (linux/amd64, linux/arm64)",
        ),
    ],
)
def test_a_push_by_digest_is_one_pushed_platform_or_a_usage_error(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        plan(cache="none", **options)
    assert caught.value.message == message


def test_digest_output_names_the_image() -> None:
    assert digest_output("127.0.0.1:5000/x")["name"] == "127.0.0.1:5000/x"


@pytest.mark.parametrize(
    ("platform", "name"),
    [
        ("linux/amd64", "linux-amd64"),
        ("linux/arm64", "linux-arm64"),
        ("linux/arm/v7", "linux-arm-v7"),
    ],
)
def test_a_digest_file_is_named_after_its_platform_and_back(platform: str, name: str) -> None:
    assert digest_file_name(platform) == name
    assert platform_of_file(name) == platform


def test_digest_files_are_written_and_read_back_by_platform(tmp_path: Path) -> None:
    write_digest_file(tmp_path / "digests", "linux/amd64", D1)
    write_digest_file(tmp_path / "digests", "linux/arm64", D2)
    assert (tmp_path / "digests" / "linux-arm64").read_text() == D2 + "\n"
    assert read_digests_dir(tmp_path / "digests") == {"linux/amd64": D1, "linux/arm64": D2}


def test_a_digest_file_that_is_not_a_digest_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "linux-amd64").write_text("latest\n")
    with pytest.raises(UsageError, match=r"linux-amd64: expected one sha256:\.\.\. digest"):
        read_digests_dir(tmp_path)


def test_a_missing_digests_dir_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such directory"):
        read_digests_dir(tmp_path / "nope")


# --- the merge's inputs (pure) ---


@pytest.mark.parametrize(
    ("flags", "files", "expected"),
    [
        ([D1, D2], [], (D1, D2)),
        ([], [D2, D1], (D2, D1)),
        ([D1], [D1, D2], (D1, D2)),
    ],
)
def test_sources_are_the_flags_then_the_files_each_once(
    flags: list[str], files: list[str], expected: tuple[str, ...]
) -> None:
    assert merge_sources(flags, files) == expected


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "nothing to merge: no --digest and no digest file"),
        (["latest"], "--digest 'latest': expected sha256: and 64 hex digits"),
        (["sha256:abc"], "--digest 'sha256:abc': expected sha256: and 64 hex digits"),
    ],
)
def test_bad_sources_are_usage_errors(flags: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        merge_sources(flags)
    assert caught.value.message == message


def test_two_images_of_one_platform_cannot_be_merged() -> None:
    assert covered_platforms({D1: ["linux/amd64"], D2: ["linux/arm64"]}, "x") == [
        "linux/amd64",
        "linux/arm64",
    ]
    with pytest.raises(UsageError, match="are both linux/amd64"):
        covered_platforms({D1: ["linux/amd64"], D2: ["linux/amd64"]}, "x")


@pytest.mark.parametrize(
    ("expected", "found", "missing"),
    [
        (["linux/amd64", "linux/arm64"], ["linux/arm64/v8", "linux/amd64"], []),
        (["linux/amd64", "linux/arm64"], ["linux/amd64"], ["linux/arm64"]),
        (["linux/amd64"], [], ["linux/amd64"]),
    ],
)
def test_missing_platforms(expected: list[str], found: list[str], missing: list[str]) -> None:
    assert missing_platforms(expected, found) == missing


def test_the_composed_index_keeps_its_exact_bytes_and_digest() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
    index = index_manifest(body)
    assert (index.digest, index.media_type, index.body) == (digest_of(body), OCI_INDEX, body)
    with pytest.raises(RegistryError, match="not an index"):
        index_manifest(b'{"mediaType": "application/vnd.oci.image.manifest.v1+json"}')


def test_the_record_of_the_index_carries_the_tags_of_the_build() -> None:
    context = ReleaseContext(event="push", ref="refs/heads/main", sha="0" * 40)
    record = record_for(TAGS, context, ["linux/amd64", "linux/arm64"], "2026-01-01T00:00:00Z")
    assert (record.tags, record.unique, record.immutable, record.latest) == (
        ["latest", "main-0123456"],
        ["main-0123456"],
        [],
        True,
    )
    assert (record.platforms, record.pushed, record.digest) == (
        ["linux/amd64", "linux/arm64"],
        False,
        "",
    )


# --- uploading a saved layout by digest (pure part) ---


def blob(data: bytes) -> tuple[str, bytes]:
    return digest_of(data), data


def test_a_saved_index_uploads_its_blobs_then_its_manifests_children_first() -> None:
    layer = blob(b"\x1f\x8b layer")
    config = blob(b'{"architecture": "arm64", "os": "linux"}')
    image = blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"digest": config[0]},
                "layers": [{"digest": layer[0]}],
            }
        ).encode()
    )
    top = blob(
        json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"digest": image[0]}]}
        ).encode()
    )
    files = {"index.json": b"{}", "oci-layout": b"{}"}
    for digest, data in (layer, config, image, top):
        files[f"blobs/sha256/{digest.removeprefix('sha256:')}"] = data
    blobs = layout_blobs(files)
    assert set(blobs) == {layer[0], config[0], image[0], top[0]}
    plain, manifests = upload_order(top[0], blobs)
    assert plain == [config[0], layer[0]]
    assert [m.digest for m in manifests] == [image[0], top[0]]
    assert manifests[1].media_type == OCI_INDEX
    del blobs[layer[0]]
    with pytest.raises(RegistryError, match=f"the saved image lacks {layer[0]}"):
        upload_order(top[0], blobs)


@pytest.mark.parametrize(
    "data",
    [b"\x1f\x8b", b'{"architecture": "amd64"}', b'{"_type": "https://in-toto.io/Statement/v0.1"}'],
)
def test_layers_configs_and_attestations_are_not_manifests(data: bytes) -> None:
    assert manifest_of(data) is None


# --- the real thing: two jobs push by digest, one merges ---

DOCKERFILE = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY payload.bin /payload.bin\n"
SHA = "0123456789abcdef0123456789abcdef01234567"


def context_for(ref: str, commit_time: int | None = None) -> ReleaseContext:
    return ReleaseContext(
        event="push", ref=ref, sha=SHA, default_branch="main", commit_time=commit_time
    )


def push_by_digest(
    root: Path, image: str, platform: str, commit_time: int | None = None
) -> BuildRecord:
    settings = Settings(
        image=image, dockerfile="Dockerfile", context=".", base_image="python:3.11-slim"
    )
    context = context_for("refs/heads/main", commit_time)
    result = run_build(
        root=root,
        settings=settings,
        build_context=context,
        tags=compute_tags(context, settings),
        options=BuildOptions(
            platforms=(platform,), push=True, push_by_digest=True, cache="none", progress="quiet"
        ),
        environ={},
    )
    return result.record


@pytest.fixture
def pushed(tmp_path: Path, scratch_repo: str) -> dict[str, str]:
    """The image built for linux/amd64 and linux/arm64 in two runs, each pushed by digest."""
    root = tmp_path / "src"
    root.mkdir()
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / "payload.bin").write_bytes(os.urandom(2048))
    digests = {}
    for platform in ("linux/amd64", "linux/arm64"):
        record = push_by_digest(root, scratch_repo, platform)
        assert record.platforms == [platform]
        assert record.pushed is True
        digests[platform] = record.digest
    assert read_digests_dir(root / "build" / "digests") == digests
    return digests


def registry_client() -> RegistryClient:
    return RegistryClient("127.0.0.1:5000")


def repository(image: str) -> str:
    return image.split("/", 1)[1]


def merge_for(
    ref: str, image: str, sources: list[str], tmp_path: Path, expected: list[str]
) -> BuildRecord:
    settings = Settings(image=image)
    context = context_for(ref)
    return merge_to_record(
        record_for(compute_tags(context, settings), context, expected),
        sources,
        registry_client(),
        record_path=tmp_path / "image.toml",
        expected=expected,
        log=lambda line: None,
    )


@pytest.mark.engine
@pytest.mark.slow
def test_two_platform_pushes_merge_into_one_index_under_exactly_the_branch_tags(
    pushed: dict[str, str], scratch_repo: str, tmp_path: Path
) -> None:
    client = registry_client()
    repo = repository(scratch_repo)
    assert client.tags(repo) == [], "a push by digest writes no tag"
    both = ["linux/amd64", "linux/arm64"]

    bogus = "sha256:" + "e" * 64
    with pytest.raises(RegistryError) as caught:
        merge_for("refs/heads/main", scratch_repo, [pushed["linux/amd64"], bogus], tmp_path, both)
    assert caught.value.one_line().splitlines() == [caught.value.one_line()]
    assert f"{scratch_repo}@{bogus} is not in {scratch_repo}: nothing was tagged" in (
        caught.value.one_line()
    )
    with pytest.raises(RegistryError, match="not linux/arm64: nothing was tagged"):
        merge_for("refs/heads/main", scratch_repo, [pushed["linux/amd64"]], tmp_path, both)
    assert client.tags(repo) == []

    record = merge_for("refs/heads/main", scratch_repo, list(pushed.values()), tmp_path, both)
    assert sorted(client.tags(repo)) == ["latest", "main-0123456"]
    index = client.manifest(repo, "latest")
    assert index.is_index
    assert sorted(index.platforms()) == both
    assert client.digest(repo, "main-0123456") == index.digest
    assert len(index.attestations()) == 2, "each platform keeps its provenance"
    written = BuildRecord.read(tmp_path / "image.toml")
    assert (written.digest, written.pushed, sorted(written.platforms)) == (
        index.digest,
        True,
        both,
    )
    assert written.tags == ["latest", "main-0123456"] == record.tags
    assert written.base_name == "docker.io/library/python:3.11-slim"


@pytest.mark.engine
@pytest.mark.slow
def test_release_tags_are_written_once_and_never_moved_by_another_merge(
    pushed: dict[str, str], scratch_repo: str, tmp_path: Path
) -> None:
    client = registry_client()
    repo = repository(scratch_repo)
    release = "refs/tags/v1.2.3"
    both = ["linux/amd64", "linux/arm64"]
    first = merge_for(release, scratch_repo, list(pushed.values()), tmp_path, both)
    assert sorted(client.tags(repo)) == ["1", "1.2", "1.2.3", "v1.2.3"]
    again = merge_for(release, scratch_repo, list(pushed.values()), tmp_path, both)
    assert again.digest == first.digest
    assert again.extra["push"]["tags"][:2] == ["v1.2.3", "1.2.3"]
    with pytest.raises(TagConflictError, match="release tags are immutable"):
        merge_for(release, scratch_repo, [pushed["linux/amd64"]], tmp_path, ["linux/amd64"])
    assert {t: client.digest(repo, t) for t in client.tags(repo)} == {
        t: first.digest for t in ("1", "1.2", "1.2.3", "v1.2.3")
    }


@pytest.mark.engine
@pytest.mark.slow
def test_a_rerun_of_the_release_workflow_keeps_the_released_index(
    tmp_path: Path, scratch_repo: str
) -> None:
    root = tmp_path / "src"
    root.mkdir()
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / "payload.bin").write_bytes(os.urandom(2048))
    both = ["linux/amd64", "linux/arm64"]

    def build_each_platform() -> list[str]:
        return [push_by_digest(root, scratch_repo, p, commit_time=1700000000).digest for p in both]

    client = registry_client()
    repo = repository(scratch_repo)
    first_sources = build_each_platform()
    first = merge_for("refs/tags/v1.2.3", scratch_repo, first_sources, tmp_path, both)
    again_sources = build_each_platform()
    assert set(again_sources).isdisjoint(first_sources), "each build has its own provenance"
    again = merge_for("refs/tags/v1.2.3", scratch_repo, again_sources, tmp_path, both)
    assert again.digest == first.digest
    assert again.extra["push"]["tags"] == ["v1.2.3", "1.2.3", "1.2", "1"]
    assert {t: client.digest(repo, t) for t in client.tags(repo)} == {
        t: first.digest for t in ("1", "1.2", "1.2.3", "v1.2.3")
    }
