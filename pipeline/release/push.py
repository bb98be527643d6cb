"""``docker.push``: every tag of the build record as ONE multi-arch index.

Order, so nothing half-pushed or wrong is ever visible under a tag people use:

1. pre-check the immutable release tags against the local image (another image: refuse
   before anything is written; the same: that tag is a no-op). "The same" is the same index,
   or the same manifest for every platform under another index: each build's provenance
   attestation makes a new index, so a re-run keeps the index (and signatures) already there;
2. upload the local index once with the pipeline's registry client (every blob, platform
   manifest and attestation manifest from the local store's ``docker save`` layout, then the
   index bytes under a staging tag that names this build only: its unique tag, its release
   tag, or its version), each request retried on its own (429, 5xx, resets, ``Retry-After``,
   within the retry budget), so a registry that fails a steady fraction of requests forever
   still gets the whole image; a connection with no progress for ``push_stall_timeout``
   seconds (default: the client's read timeout, never past the budget) is dropped and retried;
3. read the digest back from the registry, check the index holds every platform of the record,
   re-check the immutable tags against that digest;
4. write immutable and unique tags, then the moving tags (``latest``, ``1.2``, ``develop``...)
   last, by PUTting the exact same manifest bytes (same digest guaranteed), as one step that
   completes or is undone (``pipeline.release.moving``); the record says what happened.

A re-run after a kill converges: each step is idempotent.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.build.record import BuildRecord
from pipeline.config import Settings
from pipeline.engine.login import login_failure
from pipeline.engine.transfer import DockerRunner, docker_cli
from pipeline.errors import EngineError, RegistryError
from pipeline.oci.manifest import Manifest
from pipeline.oci.platform import platform_of
from pipeline.oci.reference import parse_reference
from pipeline.registry.auth import Credentials, credentials_for
from pipeline.registry.client import RegistryClient, client_for
from pipeline.registry.dockerauth import temporary_docker_config
from pipeline.registry.retry import (
    RetryPolicy,
    TransientRegistryError,
    call_with_retry,
    retry_policy,
)
from pipeline.registry.upload import push_layout
from pipeline.release.moving import MovingTagsError, move
from pipeline.release.tagplan import plan_tags, refuse_conflicts, staging_tag

Log = Callable[[str], None]


@dataclass
class PushResult:
    image: str
    digest: str
    platforms: list[str]
    tags: list[str]
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    held: list[tuple[str, str]] = field(default_factory=list)
    attestations: int = 0
    duration_s: float = 0.0
    previous: dict[str, str | None] = field(default_factory=dict)


def login(
    host: str,
    credentials: Credentials | None,
    *,
    docker: DockerRunner,
    retry: RetryPolicy,
) -> bool:
    """``docker login --password-stdin`` (the password never in argv); False when the registry
    needs no credentials."""
    if credentials is None:
        return False

    def attempt() -> None:
        try:
            docker(
                ["login", host, "--username", credentials.username, "--password-stdin"],
                credentials.password,
            )
        except TransientRegistryError:
            raise
        except RegistryError as exc:
            raise login_failure(host, exc.stderr) from None

    call_with_retry(attempt, retry)
    return True


def push(
    record: BuildRecord,
    client: RegistryClient,
    *,
    latest_policy: str = "branch",
    inspect: Callable[[str], str] | None = None,
    before_moving: Callable[[str], None] | None = None,
    images: Callable[[str], Mapping[str, str]] | None = None,
    layout: Callable[[str], Mapping[str, bytes]] | None = None,
    log: Log = print,
) -> PushResult:
    """Push the record's image through ``client``; see the module docstring for the order.
    ``before_moving`` (e.g. signing) gets the digest once every platform and fixed tag is in
    place, before any moving tag is written; if it raises, no moving tag moves. ``images``
    reads the local image's ``{platform: manifest digest}`` and ``layout`` its OCI layout's
    files (default for both: its ``docker save``)."""
    started = time.monotonic()
    ref = parse_reference(record.image)
    repo = ref.repository
    if not record.tags:
        raise RegistryError(f"the build record of {record.image} has no tags", hint="rebuild")
    from pipeline.engine import local_digest

    local = local_digest(record.reference, inspect)
    fixed = list(dict.fromkeys([*record.immutable, *record.unique]))
    existing = {tag: client.digest(repo, tag) for tag in fixed}
    same = same_image(record, client, existing, local, images or _local_images)
    target = same or local
    if target:
        refuse_conflicts(record, plan_tags(record, target, existing).conflicts)
    stage = staging_tag(record)
    if same:
        held_by = next(tag for tag in fixed if existing.get(tag) == same)
        log(
            f"{record.image}:{held_by} already holds this image ({same}: the same platform "
            "manifests, only the build's provenance differs): nothing to upload"
        )
    elif local and stage in record.immutable and existing.get(stage) == local:
        log(f"{record.image}:{stage} is already at {local}: nothing to upload")
    else:
        _upload(record, stage, local, client, layout or _local_layout, log=log)
    manifest = client.manifest(repo, same or stage)
    platforms = _check_stored(record, client, manifest, local="" if same else local, log=log)
    return write_tags(
        record,
        client,
        manifest,
        platforms,
        latest_policy=latest_policy,
        before_moving=before_moving,
        log=log,
        started=started,
    )


def _check_stored(
    record: BuildRecord, client: RegistryClient, manifest: Manifest, *, local: str, log: Log
) -> list[str]:
    """The stored index's platforms: every one of the record's, or nothing moves."""
    repo = parse_reference(record.image).repository
    digest = manifest.digest
    if local and digest != local:
        log(f"note: the registry stored {digest}, the local index is {local}")
    platforms = _platforms(client, repo, manifest)
    missing = [p for p in record.platforms if p not in platforms]
    if missing:
        raise RegistryError(
            f"{record.image}@{digest} lacks platform(s) {', '.join(missing)} "
            f"(has {', '.join(platforms) or 'none'}); no moving tag was written",
            hint="rebuild for every platform, then push again",
        )
    if not (manifest.is_index and manifest.attestations()):
        log(f"note: {record.image}@{digest} carries no provenance attestation")
    return platforms


def _upload(
    record: BuildRecord,
    stage: str,
    local: str,
    client: RegistryClient,
    layout: Callable[[str], Mapping[str, bytes]],
    *,
    log: Log,
) -> None:
    """Every blob and manifest of the local index ``local`` (platforms and attestations), then
    the index's exact bytes under the staging tag: one request at a time, each retried by
    ``client`` on its own."""
    if not local:
        raise RegistryError(f"cannot tell the index digest of {record.reference}")
    log(f"pushing {record.image}:{stage} (every platform, one index)")
    repo = parse_reference(record.image).repository
    push_layout(layout(record.reference), local, client, repo, log=log, tags=[stage])


def write_tags(
    record: BuildRecord,
    client: RegistryClient,
    manifest: Manifest,
    platforms: list[str],
    *,
    latest_policy: str,
    before_moving: Callable[[str], None] | None,
    log: Log,
    started: float,
) -> PushResult:
    """The record's tags onto ``manifest`` (already stored): fixed tags first, then
    ``before_moving`` (e.g. signing), then the moving tags. Shared by push and merge."""
    repo = parse_reference(record.image).repository
    fixed = list(dict.fromkeys([*record.immutable, *record.unique]))
    existing = {tag: client.digest(repo, tag) for tag in fixed}
    released = client.tags(repo) if record.immutable else []
    plan = plan_tags(
        record, manifest.digest, existing, latest_policy=latest_policy, released=released
    )
    refuse_conflicts(record, plan.conflicts)
    written = _write(client, repo, manifest, plan.fixed, log)
    if before_moving is not None:
        before_moving(manifest.digest)
    for tag, reason in plan.held:
        log(f"not moving {tag}: {reason}")
    moved = move(client, repo, manifest, plan.moving, log=log)
    written += list(moved.written)
    return PushResult(
        image=record.image,
        digest=manifest.digest,
        platforms=platforms,
        tags=[*plan.unchanged, *plan.fixed, *plan.moving],
        written=written,
        unchanged=list(plan.unchanged),
        held=list(plan.held),
        attestations=len(manifest.attestations()) if manifest.is_index else 0,
        duration_s=round(time.monotonic() - started, 2),
        previous=moved.previous,
    )


def same_image(
    record: BuildRecord,
    client: RegistryClient,
    existing: Mapping[str, str | None],
    local: str,
    images: Callable[[str], Mapping[str, str]],
) -> str | None:
    """The digest of an index one of the record's fixed tags already holds that is the SAME
    image as the local one (the same manifest for every platform) under another index
    digest, or None. Provenance records each build invocation, so a re-run of a release or
    of a commit gives a new index around identical images: that is a re-run (keep the index
    the registry has, and its signatures), not another image taking an immutable tag."""
    repo = parse_reference(record.image).repository
    candidates = [d for d in dict.fromkeys(existing.values()) if d and d != local]
    if not candidates:
        return None
    mine = dict(images(record.reference))
    for digest in candidates:
        theirs = client.manifest(repo, digest)
        if theirs.is_index and theirs.images() == mine:
            return digest
    return None


def _local_images(reference: str) -> Mapping[str, str]:
    from pipeline import engine

    try:
        return engine.local_images(reference)
    except EngineError as exc:
        raise RegistryError(exc.message, hint="run `invoke docker.build` first") from None


def _local_layout(reference: str) -> Mapping[str, bytes]:
    """Every file of the local image's ``docker save`` OCI layout (the blobs to upload)."""
    from pipeline import engine

    try:
        files, _ = engine.saved_blobs(engine.save_stream(reference), keep=lambda n, s: True)
    except EngineError as exc:
        raise RegistryError(exc.message, hint="run `invoke docker.build` first") from None
    return files


def _platforms(client: RegistryClient, repo: str, manifest: Manifest) -> list[str]:
    if manifest.is_index:
        return manifest.platforms()
    return [platform_of(client.image_config(repo, manifest.digest))]


def _write(
    client: RegistryClient, repo: str, manifest: Manifest, tags: Iterable[str], log: Log
) -> list[str]:
    written = []
    for tag in tags:
        client.put_manifest(repo, tag, manifest)
        log(f"tagged {client.host}/{repo}:{tag} -> {manifest.digest}")
        written.append(tag)
    return written


def update_record(record: BuildRecord, result: PushResult) -> BuildRecord:
    """The record after a push: the digest, ``pushed``, and what was written."""
    record.digest = result.digest
    record.pushed = True
    record.extra = {
        **record.extra,
        "push": {
            "digest": result.digest,
            "platforms": result.platforms,
            "tags": result.tags,
            "held": [t for t, _ in result.held],
            "attestations": result.attestations,
            "duration_s": result.duration_s,
        },
        "moving": {"result": "moved", "previous": {t: d or "" for t, d in result.previous.items()}},
    }
    return record


def push_record(
    record_path: Path,
    *,
    extra: Mapping[str, Any],
    environ: Mapping[str, str],
    latest_policy: str = "branch",
    before_moving: Callable[[str], None] | None = None,
    docker: DockerRunner | None = None,
    client: RegistryClient | None = None,
    inspect: Callable[[str], str] | None = None,
    log: Log = print,
) -> PushResult:
    """Push the record's image (see ``push``), write the digest back into the record.
    ``extra`` is ``Settings.extra`` (``retry``, ``push_stall_timeout``, ``push_timeout``).
    The registry client carries the credentials itself; ``docker login`` (password on stdin,
    a temporary ``DOCKER_CONFIG``) only for ``before_moving``, whose children (cosign) need
    it: the upload runs no docker command that talks to the registry."""
    record = BuildRecord.read(record_path)
    host = parse_reference(record.image).host
    retry = retry_policy(extra, environ)
    stall = float(extra.get("push_stall_timeout", 30.0))  # no progress: a fault, retried
    credentials = credentials_for(host, environ) if before_moving is not None else None
    with temporary_docker_config(environ) if credentials else contextlib.nullcontext():
        runner = docker or docker_cli(timeout=float(extra.get("push_timeout", 1800)))
        login(host, credentials, docker=runner, retry=retry)
        try:
            result = push(
                record,
                client or client_for(host, extra=extra, environ=environ, timeout=stall),
                latest_policy=latest_policy,
                before_moving=before_moving,
                inspect=inspect,
                log=log,
            )
        except MovingTagsError as exc:
            record.extra = {**record.extra, "moving": exc.as_record()}
            record.write(record_path)
            raise
    update_record(record, result).write(record_path)
    return result


def push_lines(record_path: Path, *, settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """``docker.push``: ``push_record`` with the settings; the lines to print."""
    result = push_record(
        record_path, extra=settings.extra, environ=environ, latest_policy=settings.tags.latest
    )
    return [
        f"digest={result.digest}",
        f"platforms={','.join(result.platforms)}",
        f"tags={','.join(result.tags)}",
    ]
