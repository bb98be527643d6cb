"""pipeline.engine and the real builds: the image for linux/amd64 (the session's), once for
linux/amd64 + linux/arm64 without emulated build steps, and the CA bundle secret that must
never reach a layer or the image history."""

from __future__ import annotations

import gzip
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline import engine
from pipeline.build.base import resolve_base
from pipeline.build.containertest import run_checks
from pipeline.build.plan import BuildOptions
from pipeline.build.progress import read_progress
from pipeline.build.record import BuildRecord
from pipeline.errors import EngineError
from pipeline.oci.manifest import INDEX_TYPES

pytest_plugins = ["fixtures_image"]

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = "127.0.0.1:5000"
BASE_IN_MIRROR = f"{REGISTRY}/library/python:3.11-slim"

# --- pure ---


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("github.com/docker/buildx 0.13.1+ds1 0.13.1+ds1-3", (0, 13, 1)),
        ("github.com/docker/buildx v0.17.1 257815a", (0, 17, 1)),
        ("github.com/docker/buildx v0.12 abc", (0, 12, 0)),
        ("buildx dev", None),
    ],
)
def test_the_buildx_version_is_read_from_its_banner(
    text: str, version: tuple[int, int, int] | None
) -> None:
    assert engine.parse_version(text) == version


@pytest.mark.parametrize(
    ("stderr", "one_line"),
    [
        (
            "ERROR: failed to solve: python:3.11-slim: no match for platform in manifest",
            "docker buildx build failed (ERROR: failed to solve: python:3.11-slim: no match "
            "for platform in manifest): the base image or the builder lacks that platform: "
            "drop it from --platform",
        ),
        (
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.",
            "the Docker daemon is unreachable: start Docker, or set DOCKER_HOST",
        ),
        (
            "ERROR: docker exporter does not currently support exporting manifest lists",
            "docker buildx build failed (ERROR: docker exporter does not currently support "
            "exporting manifest lists): this builder cannot load several platforms: pass "
            "--push, or one --platform",
        ),
    ],
)
def test_known_build_failures_carry_their_fix(stderr: str, one_line: str) -> None:
    assert engine.build_error(["docker", "buildx", "build"], 1, stderr).one_line() == one_line


# --- against the engine ---


@pytest.mark.engine
def test_an_unreachable_daemon_is_one_line_with_the_fix(tmp_path: Path) -> None:
    client = engine.docker(host=f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(EngineError) as caught:
        engine.daemon_info(client)
    assert caught.value.one_line() == (
        "the Docker daemon is unreachable: start Docker, or set DOCKER_HOST"
    )


@pytest.mark.engine
def test_an_unknown_builder_names_the_fix() -> None:
    with pytest.raises(EngineError) as caught:
        engine.builder_info(f"no-such-builder-{uuid.uuid4().hex[:6]}")
    assert caught.value.one_line().endswith(
        "list builders with `docker buildx ls`, or create one with `docker buildx create`"
    )


@pytest.mark.engine
def test_the_engine_has_buildx_0_13_and_the_containerd_store() -> None:
    assert engine.buildx_version()[:2] >= (0, 13)
    assert engine.daemon_info().containerd_store is True


@pytest.mark.engine
def test_the_base_resolves_through_the_daemons_mirror_to_its_index_digest() -> None:
    base = resolve_base("python:3.11-slim", engine.daemon_info().mirrors)
    assert base.name == "docker.io/library/python:3.11-slim"
    assert base.digest == engine.index_digest(BASE_IN_MIRROR)
    assert engine.raw_manifest(BASE_IN_MIRROR)["mediaType"] in INDEX_TYPES


@pytest.mark.engine
def test_a_base_the_mirror_does_not_have_is_one_line_with_the_fix() -> None:
    with pytest.raises(EngineError) as caught:
        resolve_base("python:0.0-missing", engine.daemon_info().mirrors)
    assert caught.value.one_line() == (
        "cannot resolve the base image python:0.0-missing "
        f"({REGISTRY}/library/python:0.0-missing) "
        f"(ERROR: {REGISTRY}/library/python:0.0-missing: not found): "
        "check the registry (mirror) that serves it, or set [tool.pipeline] base_image"
    )


@pytest.mark.engine
def test_a_platform_the_builder_cannot_build_is_refused_before_building(
    tmp_path: Path, image_builder: Callable[..., BuildRecord]
) -> None:
    with pytest.raises(EngineError) as caught:
        image_builder(
            tmp_path / "image.toml", image=f"{REGISTRY}/test/never", platforms=("linux/s390x",)
        )
    assert caught.value.one_line().startswith("builder default cannot build linux/s390x (it builds")
    assert not (tmp_path / "image.toml").exists()


@pytest.mark.engine
def test_the_session_image_is_recorded_with_its_base_digest_and_size(
    built_image: BuildRecord,
) -> None:
    host = engine.daemon_info().platform
    base_size = engine.registry_sizes(BASE_IN_MIRROR)[host]
    assert built_image.platforms == [host]
    assert (built_image.loaded, built_image.pushed) == (True, False)
    assert built_image.digest.startswith("sha256:")
    assert built_image.base_name == "docker.io/library/python:3.11-slim"
    assert built_image.base_digest == engine.index_digest(BASE_IN_MIRROR)
    assert built_image.total_steps == 10  # builder 4, app 1, runtime 5 (FROM is not a step)
    assert 0 <= built_image.cached_steps <= built_image.total_steps
    assert base_size < built_image.sizes[host] < base_size + 40_000_000
    labels = engine.image_labels(built_image.reference)
    assert labels["org.opencontainers.image.base.digest"] == built_image.base_digest
    assert labels["org.opencontainers.image.revision"] == built_image.revision


@pytest.mark.engine
@pytest.mark.slow
def test_an_arm64_image_is_built_without_emulated_steps_and_starts_under_qemu(
    tmp_path: Path, image_builder: Callable[..., BuildRecord]
) -> None:
    image = f"{REGISTRY}/test/multi-{uuid.uuid4().hex[:10]}"
    options = BuildOptions(
        platforms=("linux/amd64", "linux/arm64"), load=True, cache="none", progress="plain"
    )
    record = image_builder(tmp_path / "image.toml", image=image, options=options)
    try:
        assert record.platforms == ["linux/amd64", "linux/arm64"]
        assert set(record.sizes) == {"linux/amd64", "linux/arm64"}
        assert record.digest.startswith("sha256:")
        assert (record.extra["builder"], record.extra["driver"]) == ("default", "docker")
        checks = run_checks(record, report=lambda line: None)
        assert [c.name for c in checks][-1] == "arm64"
        assert all(c.ok for c in checks)
    finally:
        engine.remove_images(record.full_tags)


def test_every_run_step_of_a_cross_build_runs_on_the_build_platform() -> None:
    """Names as BuildKit prints them for amd64 + arm64: ``linux/amd64->arm64`` runs on amd64."""
    progress = read_progress(
        [
            "#19 [linux/amd64->arm64 builder 2/8] RUN pip install uv",
            "#22 [linux/amd64->arm64 builder 5/8] RUN uv sync --no-install-project",
            "#10 [linux/amd64 builder 2/8] RUN pip install uv",
            "#27 [linux/arm64 runtime 3/5] COPY --from=builder --link /app/.venv /app/.venv",
        ]
    )
    emulated = [s for s in progress.steps.values() if s.startswith("[linux/arm64") and "RUN" in s]
    assert emulated == []
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    runtime = dockerfile.split("AS runtime", 1)[1]
    assert "\nRUN " not in runtime  # the target-platform stage has nothing to emulate


@pytest.mark.engine
@pytest.mark.slow
def test_the_ca_bundle_secret_is_in_no_layer_and_not_in_the_history(
    tmp_path: Path, image_builder: Callable[..., BuildRecord]
) -> None:
    marker = f"pipeline-secret-marker-{uuid.uuid4().hex}"
    bundle = tmp_path / "ca.pem"
    real = Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
    bundle.write_text(real.read_text() + f"\n# {marker}\n")
    environ = {"SSL_CERT_FILE": str(bundle), "PATH": os.environ.get("PATH", "")}
    image = f"{REGISTRY}/test/secret-{uuid.uuid4().hex[:10]}"
    records: list[BuildRecord] = []
    try:
        for target in ("runtime", "builder"):  # the final image, and the stage that used it
            options = BuildOptions(
                load=True, cache="none", no_cache=True, progress="quiet", target=target
            )
            records.append(
                image_builder(
                    tmp_path / f"{target}.toml",
                    image=f"{image}-{target}",
                    options=options,
                    environ=environ,
                )
            )
        assert records[0].cached_steps == 0  # every RUN step ran, with the secret mounted
        for record in records:
            history = "\n".join(engine.image_history(record.reference))
            if record.extra["target"] == "builder":  # the stage whose RUN steps mounted it
                assert "/run/secrets/ca" in history
            assert marker not in history
            assert str(bundle) not in history
            kept, sizes = engine.saved_blobs(
                engine.save_stream(record.reference), keep=lambda name, size: True
            )
            assert sizes  # the layers were read
            for name, data in kept.items():
                content = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
                assert marker.encode() not in content, f"the CA bundle is in {name}"
    finally:
        for record in records:
            engine.remove_images(record.full_tags)


def test_only_the_named_cache_mounts_are_picked_from_buildx_du() -> None:
    du = """ID:\t\ta1
Created at:\t2026-11-29 17:55:25 +0000 UTC
Mutable:\ttrue
Description:\tcached mount /root/.cache/uv from exec /bin/sh -c uv sync with id "/bench-12ab-a"

ID:\t\tb2
Description:\tcached mount /root/.cache/uv from exec /bin/sh -c uv sync with id "/uv"

ID:\t\tc3
Description:\t[builder 2/5] RUN echo with id "/bench-12ab-a"

ID:\t\td4
Description:\tcached mount /root/.cache/uv from exec /bin/sh -c uv sync with id "/bench-12ab-b"
"""
    assert engine.cache_mount_ids(du, "bench-12ab-") == ["a1", "d4"]
    assert engine.cache_mount_ids(du, "bench-99") == []
