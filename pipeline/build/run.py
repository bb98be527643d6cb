"""A build and its history line: ``run_build``, then one ``kind="build"`` entry, success or
failure, in the history file (``pipeline.history``)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.build.base import base_name, resolve_base
from pipeline.build.cache import prune_local_cache
from pipeline.build.dockerignore import context_files, read_dockerignore
from pipeline.build.plan import (
    BuildOptions,
    BuildPlan,
    load_problem,
    plan_build,
    platform_supported,
    write_digest_file,
)
from pipeline.build.progress import Progress, display, read_progress
from pipeline.build.record import BuildRecord
from pipeline.clock import utc_stamp
from pipeline.config import Settings
from pipeline.engine.buildx import BuildOutput
from pipeline.engine.cli import DOCKER_DRIVER
from pipeline.engine.daemon import BuilderInfo, DaemonInfo
from pipeline.errors import EngineError, PipelineError, UsageError
from pipeline.gitref import ReleaseContext
from pipeline.history.report import append_history, entry_from_record
from pipeline.history.store import planned_entry
from pipeline.oci.labels import ImageTags
from pipeline.registry.retry import RetryPolicy, retry_command, retry_policy


def build_with_history(
    history: Path,
    *,
    root: Path,
    settings: Settings,
    build_context: ReleaseContext,
    tags: ImageTags,
    options: BuildOptions,
    environ: Mapping[str, str],
    record_path: Path | None = None,
) -> BuildResult:
    """``pipeline.build.plan.run_build``, then one ``kind="build"`` line in ``history``: success
    from the new record, or failure (the error's one line) before the error goes on up."""
    try:
        result = run_build(
            root=root,
            settings=settings,
            build_context=build_context,
            tags=tags,
            options=options,
            environ=environ,
            record_path=record_path,
        )
    except PipelineError as exc:
        entry = planned_entry(
            build_context, tags, result="failure", kind="build", error=exc.one_line()
        )
        append_history(history, entry)
        raise
    append_history(history, entry_from_record(result.record, result="success", kind="build"))
    return result


STAMP = "pipeline-inputs.sha256"


def inputs_digest(plan: BuildPlan) -> str:
    """What the layers of a build depend on: the Dockerfile, every file of the context, the
    build arguments (the base digest among them), the platforms and the target. Equal digests
    mean a local cache export would write what the directory already holds."""
    digest = hashlib.sha256()
    digest.update(plan.dockerfile.read_bytes())
    files = context_files(plan.context, read_dockerignore(plan.context / ".dockerignore"))
    for name in sorted(files):
        digest.update(b"\0" + name.encode() + b"\0")
        digest.update((plan.context / name).read_bytes())
    facts = {
        "build_args": plan.build_args,
        "platforms": list(plan.platforms),
        "target": plan.target or "",
    }
    digest.update(json.dumps(facts, sort_keys=True).encode())
    return digest.hexdigest()


def cache_is_current(directory: Path, digest: str) -> bool:
    """Whether the local cache directory was last exported for exactly these inputs."""
    try:
        recorded = (directory / STAMP).read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return recorded == digest and (directory / "index.json").is_file()


@dataclass
class BuildResult:
    record: BuildRecord
    plan: BuildPlan
    progress: Progress
    lines: list[str]


def preflight(
    plan_options: BuildOptions, settings: Settings, root: Path
) -> tuple[DaemonInfo, BuilderInfo]:
    """The checks a user fixes one by one: the Dockerfile, the daemon, buildx, the builder.
    Returns the daemon's and the builder's facts."""
    dockerfile = root / settings.dockerfile
    if not dockerfile.is_file():
        raise UsageError(
            f"no Dockerfile at {settings.dockerfile}",
            hint="create it, or set [tool.pipeline] dockerfile",
        )
    from pipeline import engine

    daemon = engine.daemon_info()
    engine.buildx_version()
    builder = engine.builder_info(plan_options.builder)
    return daemon, builder


def push_from_store(plan: BuildPlan, settings: Settings, environ: Mapping[str, str]) -> str:
    """Upload the image built into the local store under ``plan.store_tag`` by digest only;
    returns its index digest."""
    return upload_from_store(plan.store_tag, plan.image, settings, environ)


def upload_from_store(
    local: str, image: str, settings: Settings, environ: Mapping[str, str]
) -> str:
    """Upload the local store's ``local`` (its index, platform manifests, attestations and
    blobs, byte for byte) to ``image``'s repository by digest only, with no tag; its digest."""
    from pipeline import engine
    from pipeline.oci.reference import parse_reference
    from pipeline.registry.client import client_for
    from pipeline.registry.upload import push_layout

    digest = engine.local_digest(local)
    files, _ = engine.saved_blobs(engine.save_stream(local), keep=lambda name, size: True)
    ref = parse_reference(image)
    client = client_for(ref.host, extra=settings.extra, environ=environ)
    push_layout(files, digest, client, ref.repository, log=lambda line: None)
    return digest


def run_build(
    *,
    root: Path,
    settings: Settings,
    build_context: ReleaseContext,
    tags: ImageTags,
    options: BuildOptions,
    environ: Mapping[str, str],
    record_path: Path | None = None,
) -> BuildResult:
    """Check the engine, resolve the base, build, measure, and write the build record."""
    daemon, builder = preflight(options, settings, root)
    base = resolve_base(base_name(settings, root), daemon.mirrors)
    plan = plan_build(
        root=root,
        settings=settings,
        tags=tags,
        options=options,
        environ=environ,
        host_platform=daemon.platform,
        base=base,
        source_date_epoch=build_context.commit_time,
    )
    plan = fit_to_builder(plan, builder, daemon)
    plan, stamp = _cache_stamp(plan)
    output, duration = _execute(plan, settings, environ, stamp)
    digest, reference, extra = _result_digest(plan, output, root / options.digests_dir)
    progress = read_progress(output.lines)
    record = BuildRecord(
        image=tags.image,
        version=tags.version,
        tags=list(tags.tag_names),
        platforms=list(plan.platforms),
        immutable=list(tags.immutable),
        unique=list(tags.unique),
        latest=tags.latest,
        labels=dict(plan.labels),
        digest=digest,
        loaded=plan.load,
        pushed=plan.push,
        revision=build_context.sha,
        ref=build_context.ref,
        event=build_context.event,
        duration_s=round(duration, 2),
        cached_steps=progress.cached_steps,
        total_steps=progress.total_steps,
        sizes=_sizes(plan, reference, retry_policy(settings.extra, environ)),
        base_name=base.name,
        base_digest=base.digest,
        built_at=utc_stamp(),
        extra={**_build_facts(plan, builder, progress, settings), **extra},
    )
    if record_path is not None:
        record.write(record_path)
    return BuildResult(record=record, plan=plan, progress=progress, lines=output.lines)


def fit_to_builder(plan: BuildPlan, builder: BuilderInfo, daemon: DaemonInfo) -> BuildPlan:
    """The plan as this builder can run it: every platform buildable, a load it can make, a
    push by digest through the local store for the ``docker`` driver."""
    missing = [p for p in plan.platforms if not platform_supported(p, builder.platforms)]
    if missing:
        raise EngineError(
            f"builder {builder.name} cannot build {', '.join(missing)} "
            f"(it builds {', '.join(builder.platforms) or 'nothing'})",
            hint="install QEMU binfmt handlers, use another --builder, or drop that --platform",
        )
    if plan.push_by_digest and builder.driver == DOCKER_DRIVER:
        plan = replace(plan, via_store=True)
    if plan.load:
        problem = load_problem(
            plan.platforms, builder.driver, daemon.containerd_store, builder.name
        )
        if problem:
            raise EngineError(problem, hint="pass --push, or build a single --platform")
    return plan


def _cache_stamp(plan: BuildPlan) -> tuple[BuildPlan, tuple[Path, str] | None]:
    """A local cache export stamped with the plan's inputs; none when it already holds them."""
    if not (plan.cache.export and plan.cache.kind == "local"):
        return plan, None
    directory = Path(plan.cache.export["dest"])
    directory.mkdir(parents=True, exist_ok=True)
    stamp = (directory / STAMP, inputs_digest(plan))
    if not plan.no_cache and cache_is_current(directory, stamp[1]):
        return replace(plan, cache=replace(plan.cache, export=None)), None  # nothing new
    return plan, stamp


def _execute(
    plan: BuildPlan,
    settings: Settings,
    environ: Mapping[str, str],
    stamp: tuple[Path, str] | None,
) -> tuple[BuildOutput, float]:
    """buildx (and the push from the local store), timed; the cache stamp written after."""
    from pipeline import engine

    wall = time.time()
    started = time.monotonic()
    try:
        output = engine.build(plan.context, plan.buildx_options(), on_line=display(plan.progress))
        if plan.via_store:
            output.metadata["containerimage.digest"] = push_from_store(plan, settings, environ)
    finally:
        if plan.via_store:
            engine.remove_images([plan.store_tag])
    duration = time.monotonic() - started
    if stamp is not None:
        prune_local_cache(stamp[0].parent, older_than=wall)
        stamp[0].write_text(stamp[1] + "\n", encoding="utf-8")
    return output, duration


def _result_digest(
    plan: BuildPlan, output: BuildOutput, digests_dir: Path
) -> tuple[str, str, dict[str, Any]]:
    """The digest buildx reported, the reference to measure, and (for a push by digest) the
    digest file written for ``docker.merge``."""
    digest = str(output.metadata.get("containerimage.digest", ""))
    if not plan.push_by_digest:
        return digest, plan.tags[0], {}
    if not digest.startswith("sha256:"):
        raise EngineError(
            f"buildx reported no digest for {plan.image} ({plan.platforms[0]})",
            hint="check the build output; the push by digest cannot be merged without it",
        )
    written = write_digest_file(digests_dir, plan.platforms[0], digest)
    return digest, f"{plan.image}@{digest}", {"push_by_digest": True, "digest_file": str(written)}


def _sizes(plan: BuildPlan, reference: str, retry: RetryPolicy) -> dict[str, int]:
    from pipeline import engine

    if plan.push:  # the inspect after the push: a reset here must not fail a pushed build
        return retry_command(lambda: engine.registry_sizes(reference), retry)
    return engine.local_sizes(reference, plan.platforms)


def _build_facts(
    plan: BuildPlan, builder: BuilderInfo, progress: Progress, settings: Settings
) -> dict[str, Any]:
    return {
        "builder": builder.name,
        "driver": builder.driver,
        "cache": plan.cache.kind,
        "target": plan.target or "",
        "context_bytes": progress.context_bytes or 0,
        "dockerfile": settings.dockerfile,
    }
