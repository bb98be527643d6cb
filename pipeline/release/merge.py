"""``docker.merge``: the per-platform images that ``docker.build --push --push-by-digest`` pushed
(one job per platform, no tag) become ONE tagged multi-platform index.

Order, with the discipline of ``pipeline.release.push`` (whose functions it reuses):

1. every digest must be in the image's repository, and together they must cover every expected
   platform exactly once (else: one line, nothing written);
2. ``docker buildx imagetools create --dry-run`` composes the index from ``IMAGE@DIGEST``
   sources: its exact bytes, hence its digest, are known before anything is written;
3. the immutable release tags are checked against that index (another image: refuse; the
   same index, or the same platform manifests under another index, as a re-run of the
   workflow gives since provenance records each build: keep what the registry has);
4. the index is written under the staging tag (the unique tag), read back, and must list every
   expected platform;
5. immutable and unique tags, then the moving tags last, by PUTting the same manifest bytes.

A re-run converges: each step is idempotent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.build.record import BuildRecord
from pipeline.clock import utc_stamp
from pipeline.config import Settings
from pipeline.engine.imagetools import imagetools_composer
from pipeline.errors import RegistryError, UsageError
from pipeline.gitref import RefFlags, ReleaseContext
from pipeline.oci.labels import LABEL, ImageTags
from pipeline.oci.manifest import INDEX_TYPES, OCI_INDEX, Manifest
from pipeline.oci.platform import parse_platforms, platform_key
from pipeline.oci.reference import digest_of, is_digest, parse_reference
from pipeline.registry.client import RegistryClient
from pipeline.registry.retry import retry_command
from pipeline.registry.transport import NotFoundError
from pipeline.release.moving import MovingTagsError
from pipeline.release.push import Log, PushResult, _platforms, same_image, update_record, write_tags
from pipeline.release.tagplan import plan_tags, refuse_conflicts, staging_tag

# ``IMAGE@DIGEST`` sources in, the index's exact bytes out (``imagetools create --dry-run``).
Composer = Callable[[Sequence[str]], bytes]


# --- pure ---


def platform_of_file(name: str) -> str:
    """``linux-arm64`` -> ``linux/arm64`` (the name ``docker.build`` gives a digest file)."""
    return name.replace("-", "/")


def read_digests_dir(directory: Path) -> dict[str, str]:
    """Digest files (``<os>-<arch>``, one digest each) -> {platform: digest}. A file that is not
    one digest is a one-line error."""
    if not directory.is_dir():
        raise UsageError(
            f"--digests-dir {directory}: no such directory",
            hint="download the digest artifacts of the per-platform builds first",
        )
    found: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name.endswith(".tmp"):
            continue
        text = path.read_text(encoding="utf-8").strip()
        if not is_digest(text):
            raise UsageError(f"{path}: expected one sha256:... digest, found {text[:80]!r}")
        found[platform_of_file(path.name)] = text
    return found


def merge_sources(digests: Iterable[str], from_dir: Iterable[str] = ()) -> tuple[str, ...]:
    """The digests to merge, ``--digest`` values first, duplicates once; at least one, each a
    ``sha256:`` digest."""
    items = [d.strip() for d in [*digests, *from_dir] if d.strip()]
    for digest in items:
        if not is_digest(digest):
            raise UsageError(f"--digest {digest!r}: expected sha256: and 64 hex digits")
    if not items:
        raise UsageError(
            "nothing to merge: no --digest and no digest file",
            hint="pass --digest sha256:... (repeatable) or --digests-dir build/digests",
        )
    return tuple(dict.fromkeys(items))


def covered_platforms(by_source: Mapping[str, Sequence[str]], image: str) -> list[str]:
    """Every platform of the sources, in order; a platform in two sources is an error (the
    index would hold two images for it)."""
    seen: dict[str, str] = {}
    for digest, platforms in by_source.items():
        for platform in platforms:
            if platform in seen:
                raise UsageError(
                    f"{image}@{seen[platform]} and @{digest} are both {platform}: "
                    "merge one image per platform",
                )
            seen[platform] = digest
    return list(seen)


def missing_platforms(expected: Iterable[str], found: Iterable[str]) -> list[str]:
    """Expected platforms the index lacks (``linux/arm64`` matches ``linux/arm64/v8``)."""

    have = {platform_key(p) for p in found}
    return [p for p in expected if platform_key(p) not in have]


def index_manifest(body: bytes) -> Manifest:
    """The composed index as the registry will store it: exact bytes, digest, media type."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise RegistryError(f"imagetools create returned no index ({exc})") from None
    media_type = str(data.get("mediaType", "")) if isinstance(data, dict) else ""
    if media_type and media_type not in INDEX_TYPES:
        raise RegistryError(f"imagetools create returned a {media_type}, not an index")
    return Manifest(digest_of(body), media_type or OCI_INDEX, body)


def record_for(
    tags: ImageTags, context: ReleaseContext, platforms: Sequence[str], built_at: str = ""
) -> BuildRecord:
    """The record of the index to be: the tags ``docker.build`` computes for this context."""
    return BuildRecord(
        image=tags.image,
        version=tags.version,
        tags=list(tags.tag_names),
        platforms=list(platforms),
        immutable=list(tags.immutable),
        unique=list(tags.unique),
        latest=tags.latest,
        labels=dict(tags.labels),
        revision=context.sha,
        ref=context.ref,
        event=context.event,
        built_at=built_at,
    )


# --- I/O ---


@dataclass
class MergeResult:
    push: PushResult
    sources: tuple[str, ...]


def merge(
    record: BuildRecord,
    sources: Sequence[str],
    client: RegistryClient,
    *,
    compose: Composer,
    expected: Sequence[str],
    latest_policy: str = "branch",
    before_moving: Callable[[str], None] | None = None,
    log: Log = print,
) -> MergeResult:
    """Join the per-platform ``sources`` (digests in ``record.image``'s repository) into one
    index tagged with the record's tags; see the module docstring for the order."""
    started = time.monotonic()
    ref = parse_reference(record.image)
    if not record.tags:
        raise RegistryError(f"no tags to write for {record.image}", hint="check --ref/--event")
    _check_sources(record, sources, client, expected)
    index = index_manifest(
        retry_command(
            lambda: compose([f"{ref.name}@{d}" for d in sources]),
            client.retry,
            on_retry=lambda n, exc: log(f"retrying imagetools create (attempt {n + 1}): {exc}"),
        )
    )
    stored = _stage(record, client, index, len(sources), log)
    platforms = stored.platforms()
    missing = missing_platforms(expected, platforms)
    if missing:
        raise RegistryError(
            f"{record.image}@{stored.digest} lacks platform(s) {', '.join(missing)} "
            f"(has {', '.join(platforms) or 'none'}); no other tag was written",
        )
    result = write_tags(
        record,
        client,
        stored,
        platforms,
        latest_policy=latest_policy,
        before_moving=before_moving,
        log=log,
        started=started,
    )
    return MergeResult(push=result, sources=tuple(sources))


def _check_sources(
    record: BuildRecord, sources: Sequence[str], client: RegistryClient, expected: Sequence[str]
) -> None:
    """Every source is in the repository, one per platform, and they cover ``expected``."""
    ref = parse_reference(record.image)
    by_source: dict[str, list[str]] = {}
    for digest in sources:
        try:
            manifest = client.manifest(ref.repository, digest)
        except NotFoundError:
            raise RegistryError(
                f"{record.image}@{digest} is not in {ref.name}: nothing was tagged",
                hint="push it first: `invoke docker.build --push --push-by-digest --platform P`",
            ) from None
        by_source[digest] = _platforms(client, ref.repository, manifest)
    found = covered_platforms(by_source, record.image)
    missing = missing_platforms(expected, found)
    if missing:
        raise RegistryError(
            f"the digests cover {', '.join(found) or 'no platform'}, not {', '.join(missing)}: "
            "nothing was tagged",
            hint="wait for (or re-run) the build of every platform, or pass --platform",
        )


def _stage(
    record: BuildRecord, client: RegistryClient, index: Manifest, count: int, log: Log
) -> Manifest:
    """The index as the registry stores it: the one a release tag already holds when it is
    the same image (a re-run), else the new index under the staging tag."""
    ref = parse_reference(record.image)
    repo = ref.repository
    fixed = list(dict.fromkeys([*record.immutable, *record.unique]))
    existing = {tag: client.digest(repo, tag) for tag in fixed}
    same = same_image(record, client, existing, index.digest, lambda _: index.images())
    refuse_conflicts(record, plan_tags(record, same or index.digest, existing).conflicts)
    if same:
        held_by = next(tag for tag in fixed if existing.get(tag) == same)
        log(
            f"{ref.name}:{held_by} already holds this image ({same}: the same platform "
            "manifests, only the builds' provenance differs): keeping it"
        )
        return client.manifest(repo, same)
    stage = staging_tag(record)
    client.put_manifest(repo, stage, index)
    log(f"created {ref.name}:{stage} -> {index.digest} from {count} image(s)")
    stored = client.manifest(repo, stage)
    if stored.digest != index.digest:
        raise RegistryError(
            f"{ref.name}:{stage} is at {stored.digest}, not the index {index.digest}: "
            "another run moved it; no other tag was written",
            hint="re-run the merge",
        )
    return stored


def fixed_only(record: BuildRecord) -> tuple[BuildRecord, list[str]]:
    """The record without its moving tags (``latest``, ``1.2``, ``develop``...), and those."""
    fixed = {*record.immutable, *record.unique}
    later = [t for t in record.tags if t not in fixed]
    return replace(record, tags=[t for t in record.tags if t in fixed], latest=False), later


def merged_record(
    record: BuildRecord, result: MergeResult, labels: Mapping[str, str]
) -> BuildRecord:
    """The build record of the merged index (for ``docker.sign``): digest, tags, platforms,
    ``pushed``; the base from the images' labels."""
    update_record(record, result.push)
    record.platforms = list(result.push.platforms)
    record.loaded = False
    record.base_name = labels.get(f"{LABEL}base.name", record.base_name)
    record.base_digest = labels.get(f"{LABEL}base.digest", record.base_digest)
    record.extra = {**record.extra, "merge": {"sources": list(result.sources)}}
    return record


def merge_to_record(
    record: BuildRecord,
    sources: Sequence[str],
    client: RegistryClient,
    *,
    record_path: Path,
    expected: Sequence[str],
    latest_policy: str = "branch",
    compose: Composer | None = None,
    log: Log = print,
    moving: bool = True,
) -> BuildRecord:
    """``merge``, then write the record of the index to ``record_path`` (also when the moving
    tags were put back: the record then says what was written and restored); ``moving=False``
    (``--no-moving-tags``) writes the immutable and unique tags only: ``docker.tag-moving``
    writes the rest once the index is signed."""
    tagged, later = (record, []) if moving else fixed_only(record)
    try:
        result = merge(
            tagged,
            sources,
            client,
            compose=compose or imagetools_composer(),
            expected=expected,
            latest_policy=latest_policy if moving else "branch",
            log=log,
        )
    except MovingTagsError as exc:
        record.extra = {**record.extra, "moving": exc.as_record()}
        record.write(record_path)
        raise
    if later:
        log(f"not moving {', '.join(later)} yet: `docker.tag-moving` writes them once signed")
    repo = parse_reference(record.image).repository
    labels: dict[str, Any] = {}
    try:
        config = client.image_config(repo, result.push.digest)
        labels = dict((config.get("config") or {}).get("Labels") or {})
    except RegistryError as exc:
        log(f"note: cannot read the image labels ({exc.one_line()})")
    merged = merged_record(record, result, {str(k): str(v) for k, v in labels.items()})
    merged.write(record_path)
    return merged


@dataclass(frozen=True)
class MergeRequest:
    """The flags of ``docker.merge``."""

    digest: tuple[str, ...] = ()
    digests_dir: str | None = None
    platform: tuple[str, ...] = ()
    record: str | None = None
    git: RefFlags = field(default_factory=RefFlags)
    moving_tags: bool = True  # False: immutable and unique tags only (docker.tag-moving later)


def merge_digests(
    request: MergeRequest, *, root: Path, settings: Settings, environ: Mapping[str, str]
) -> BuildRecord:
    """``docker.merge`` end to end: the digests (flags, then the digest files), the platforms
    the index must have (``--platform``, else the settings'), the tags of this commit; the
    merged index's record written."""
    from pipeline.build.plan import DIGESTS_DIR
    from pipeline.registry.client import client_for
    from pipeline.release.tags import image_tags

    context, tags = image_tags(environ, Path.cwd(), settings, request.git)
    directory = request.digests_dir or ("" if request.digest else DIGESTS_DIR)
    from_dir = read_digests_dir(root / directory) if directory else {}
    sources = merge_sources(request.digest, from_dir.values())
    expected = parse_platforms(request.platform, what="--platform") or settings.platforms
    planned = record_for(tags, context, expected, utc_stamp())
    client = client_for(parse_reference(planned.image).host, extra=settings.extra, environ=environ)
    return merge_to_record(
        planned,
        sources,
        client,
        record_path=root / (request.record or settings.record),
        expected=expected,
        latest_policy=settings.tags.latest,
        moving=request.moving_tags,
    )


def merge_outputs(record: BuildRecord) -> dict[str, str]:
    """``docker.merge``'s step outputs."""
    return {
        "digest": record.digest,
        "version": record.version,
        "tags": "\n".join(record.full_tags),
        "platforms": ",".join(record.platforms),
    }


def merge_report(record: BuildRecord, environ: Mapping[str, str]) -> list[str]:
    """What ``docker.merge`` prints; its outputs handed to GitHub."""
    from pipeline.github import report_to_github

    report_to_github(environ, outputs=merge_outputs(record))
    return [
        f"digest={record.digest}",
        f"tags={','.join(record.extra['push']['tags'])}",
        f"platforms={','.join(record.platforms)}",
    ]
