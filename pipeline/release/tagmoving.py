"""``docker.tag-moving``: the moving tags (``latest``, ``1.2``, ``1``, ``develop``...) of a ref,
written onto ONE digest only once its cosign signature verifies.

The per-platform path is ``docker.merge --no-moving-tags`` (immutable and unique tags only,
``digest=...``), ``docker.sign --ref IMAGE@DIGEST``, then ``docker.tag-moving --digest DIGEST``:
if signing fails, no moving tag ever points at the unsigned index. The checks, in order, before
anything is written: a digest (else exit 2), in the repository, signed, and not another image
than the one the ref's immutable release tags already hold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pipeline.build.record import BuildRecord
from pipeline.config import Settings
from pipeline.errors import RegistryError, UsageError
from pipeline.gitref import RefFlags
from pipeline.oci.reference import Reference, is_digest, parse_reference
from pipeline.registry.client import RegistryClient
from pipeline.registry.transport import NotFoundError
from pipeline.release.moving import move
from pipeline.release.sign import UnsignedError
from pipeline.release.tagplan import plan_tags, refuse_conflicts

Verified = Callable[[Reference], bool]
Log = Callable[[str], None]


@dataclass(frozen=True)
class MovingResult:
    digest: str
    tags: tuple[str, ...]
    written: tuple[str, ...]
    held: tuple[tuple[str, str], ...] = ()


def tag_moving(
    record: BuildRecord,
    digest: str,
    client: RegistryClient,
    *,
    verified: Verified,
    latest_policy: str = "branch",
    log: Log = print,
) -> MovingResult:
    """Write ``record``'s moving tags onto ``digest``; see the module docstring."""
    if not is_digest(digest):
        raise UsageError(f"--digest {digest!r}: expected sha256: and 64 hex digits")
    ref = parse_reference(record.image)
    repo = ref.repository
    try:
        manifest = client.manifest(repo, digest)
    except NotFoundError:
        raise RegistryError(
            f"{record.image}@{digest} is not in {ref.name}: no moving tag written",
            hint="merge it first: `invoke docker.merge --no-moving-tags`",
        ) from None
    pinned = ref.with_digest(digest)
    if not verified(pinned):
        raise UnsignedError(
            f"{pinned} is not signed: no moving tag written",
            hint=f"sign it first: `invoke docker.sign --ref {pinned}`",
        )
    existing = {tag: client.digest(repo, tag) for tag in record.immutable}
    released = client.tags(repo) if record.immutable else []
    plan = plan_tags(record, digest, existing, latest_policy=latest_policy, released=released)
    refuse_conflicts(record, plan.conflicts)
    for tag, reason in plan.held:
        log(f"not moving {tag}: {reason}")
    moved = move(client, repo, manifest, plan.moving, log=log)  # all of them, or none
    return MovingResult(digest, plan.moving, moved.written, plan.held)


@dataclass(frozen=True)
class MovingRequest:
    """The flags of ``docker.tag-moving``."""

    digest: str = ""
    git: RefFlags = field(default_factory=RefFlags)


def tag_moving_request(
    request: MovingRequest, *, settings: Settings, environ: Mapping[str, str]
) -> list[str]:
    """``docker.tag-moving`` end to end: this commit's tags (as ``docker.merge`` computes them),
    the signature check from ``COSIGN_*`` (or keyless in Actions), the moving tags written;
    what it prints."""
    from pathlib import Path

    from pipeline.registry.client import client_for
    from pipeline.release.merge import record_for
    from pipeline.release.sign import verifier_from_env
    from pipeline.release.tags import image_tags

    if not is_digest(request.digest):
        raise UsageError(f"--digest {request.digest!r}: expected sha256: and 64 hex digits")
    context, tags = image_tags(environ, Path.cwd(), settings, request.git)
    planned = record_for(tags, context, list(settings.platforms))
    client = client_for(parse_reference(planned.image).host, extra=settings.extra, environ=environ)
    result = tag_moving(
        planned,
        request.digest,
        client,
        verified=verifier_from_env(environ),
        latest_policy=settings.tags.latest,
    )
    return [f"digest={result.digest}", f"tags={','.join(result.tags)}"]
