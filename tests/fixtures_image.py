"""The image, built once per test session: ``built_image`` (its BuildRecord) and
``built_image_record`` (the path of its build/image.toml); ``image_builder`` builds others.

Wire it in with ``pytest_plugins = ["fixtures_image"]`` in tests/conftest.py. The image is the
real one (docker/Dockerfile, this checkout's gateway/) for the host platform, loaded into the
local store as ``127.0.0.1:5000/test/built-<hex>:<tags>`` (not pushed: a test that needs it in
the registry pushes it to its own ``scratch_repo``). Its tags are removed at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline import engine
from pipeline.build.plan import BuildOptions
from pipeline.build.record import BuildRecord
from pipeline.build.run import run_build
from pipeline.config import Settings, load_settings
from pipeline.release.tags import image_tags
from tasks import project_config

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "127.0.0.1:5000"


def project_settings(**overrides: object) -> Settings:
    """The settings a task sees (Invoke's config layers: ``[tool.pipeline]``,
    ``/etc/invoke.yaml``, ``INVOKE_DOCKER_*``...), with overrides as flags."""
    return load_settings(project_config().docker, ROOT, overrides)


def build_for_test(
    record_path: Path,
    *,
    image: str,
    platforms: tuple[str, ...] = (),
    options: BuildOptions | None = None,
    environ: dict[str, str] | None = None,
) -> BuildRecord:
    """Build this checkout's image into the local store (no layer-cache export)."""
    settings = project_settings(image=image)
    context, tags = image_tags({}, ROOT, settings)
    env = dict(os.environ if environ is None else environ)
    env.pop("GITHUB_ACTIONS", None)
    opts = options or BuildOptions(platforms=platforms, load=True, cache="none", progress="quiet")
    result = run_build(
        root=ROOT,
        settings=settings,
        build_context=context,
        tags=tags,
        options=opts,
        environ=env,
        record_path=record_path,
    )
    return result.record


@pytest.fixture(scope="session")
def image_builder(engine_ready: None) -> Callable[..., BuildRecord]:
    """``build_for_test``: build this checkout's image with other options (the caller
    removes the tags it builds)."""
    return build_for_test


@pytest.fixture(scope="session")
def built_image_record(
    tmp_path_factory: pytest.TempPathFactory, engine_ready: None
) -> Iterator[Path]:
    """build/image.toml of the session's image (built on first use)."""
    path = tmp_path_factory.mktemp("built-image") / "image.toml"
    record = build_for_test(path, image=f"{REGISTRY}/test/built-{uuid.uuid4().hex[:10]}")
    try:
        yield path
    finally:
        engine.remove_images(record.full_tags)


@pytest.fixture(scope="session")
def built_image(built_image_record: Path) -> BuildRecord:
    """The BuildRecord of the session's image: ``.reference`` runs it."""
    return BuildRecord.read(built_image_record)
