"""``docker.promote`` and ``docker.rollback``: environment tags that point at signed digests,
with their history kept IN the registry so any machine can roll back.

Every promotion first appends a history entry ``<env>-<N>`` at the digest (``N`` the registry's
own sequence: see ``pipeline.release.envhistory``), then moves the ``<env>`` tag. A rollback
without ``--to`` points the environment at the newest entry before the current digest's with
another digest (so two rollbacks in a row toggle, like ``helm rollback``), skipping entries that
fail signature verification, one line each. A rollback is itself a promotion: it is recorded too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.build.record import pushed_digest
from pipeline.clock import TAG_STAMP
from pipeline.config import Settings
from pipeline.errors import PipelineError, UsageError
from pipeline.oci.manifest import Manifest
from pipeline.oci.reference import Reference, is_digest, parse_reference
from pipeline.registry.client import RegistryClient
from pipeline.registry.transport import NotFoundError
from pipeline.release import envhistory
from pipeline.release.sign import UnsignedError

DEFAULT_ENVIRONMENTS = ("staging", "production")
_ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
Log = Callable[[str], None]
Verifier = Callable[[Reference], bool]


class NoHistoryError(PipelineError):
    """Nothing to roll back to."""


@dataclass(frozen=True)
class Promotion:
    environment: str
    digest: str
    previous: str | None
    history_tag: str | None
    changed: bool


def environments(configured: object) -> tuple[str, ...]:
    """The allowed environment names from settings (list or comma string), else the default."""
    if configured in (None, "", [], ()):
        return DEFAULT_ENVIRONMENTS
    items = configured.split(",") if isinstance(configured, str) else list(configured)  # type: ignore[call-overload]
    names = tuple(str(i).strip() for i in items if str(i).strip())
    for name in names:
        if not _ENV_NAME.match(name) or name in ("latest", "dev"):
            raise UsageError(f"environment name {name!r} is not usable as a tag")
    return names


def check_environment(name: str, allowed: Sequence[str]) -> str:
    if name not in allowed:
        raise UsageError(
            f"unknown environment {name!r}: expected one of {', '.join(allowed)}",
            hint="or add it to [tool.pipeline] environments",
        )
    return name


def history_tag(environment: str, now: datetime) -> str:
    return f"{environment}-{now.astimezone(UTC).strftime(TAG_STAMP)}"


def history_tags(environment: str, tags: Iterable[str]) -> list[str]:
    """This environment's history tags, oldest first (fixed-width stamps sort as text)."""
    pattern = re.compile(rf"^{re.escape(environment)}-(\d{{20}})$")
    return sorted(t for t in tags if pattern.match(t))


def history_time(tag: str) -> datetime | None:
    match = re.search(r"-(\d{20})$", tag)
    if not match:
        return None
    return datetime.strptime(match.group(1), TAG_STAMP).replace(tzinfo=UTC)


def previous_digest(history: Sequence[tuple[str, str]], current: str | None) -> str | None:
    """Pure: the digest the environment had before ``current``: the newest history entry
    (``(tag, digest)``, oldest first) with another digest; None if there is none."""
    for _, digest in reversed(history):
        if digest != current:
            return digest
    return None


def resolve(client: RegistryClient, image: Reference, ref: str) -> Manifest:
    """A tag or digest of ``image``'s repository, which must exist there."""
    ref = ref.strip()
    if "@" in ref:
        ref = ref.rsplit("@", 1)[1]
    elif ":" in ref and not is_digest(ref):
        name, _, tag = ref.rpartition(":")
        if name and name != image.name and "/" in name:
            raise UsageError(f"--ref {ref}: not in {image.name}", hint="pass a TAG or DIGEST")
        ref = tag if name else ref
    if not ref:
        raise UsageError("an empty reference: pass a TAG or a sha256:DIGEST")
    if not (is_digest(ref) or re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", ref)):
        raise UsageError(
            f"--ref {ref!r}: not a tag or a sha256 digest", hint="pass a TAG or a sha256:DIGEST"
        )
    try:
        return client.manifest(image.repository, ref)
    except NotFoundError:
        raise NotFoundError(
            f"{image.name}: {ref} is not in the repository",
            hint="pass a tag or digest that was pushed",
        ) from None


def promote(
    client: RegistryClient,
    image: Reference,
    environment: str,
    ref: str,
    *,
    allowed: Sequence[str] = DEFAULT_ENVIRONMENTS,
    verified: Verifier,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    log: Log = print,
) -> Promotion:
    """Point ``<image>:<environment>`` at ``ref`` once it is known to exist and be signed.
    ``now`` is accepted for older callers and unused: the history's order is the registry's."""
    check_environment(environment, allowed)
    manifest = resolve(client, image, ref)
    return _point(client, image, environment, manifest, verified=verified, log=log)


def rollback(
    client: RegistryClient,
    image: Reference,
    environment: str,
    to: str | None = None,
    *,
    allowed: Sequence[str] = DEFAULT_ENVIRONMENTS,
    verified: Verifier,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    log: Log = print,
) -> Promotion:
    """Point the environment back: at ``to``, or at the digest it had before."""
    check_environment(environment, allowed)
    repo = image.repository
    if to is not None:
        manifest = resolve(client, image, to)
        return _point(client, image, environment, manifest, verified=verified, log=log)
    current = client.digest(repo, environment)
    skipped = 0
    for entry in envhistory.previous(envhistory.read(client, repo, environment), current):
        if not verified(image.with_digest(entry.digest)):
            skipped += 1
            log(
                f"skipping history entry {entry.tag} ({entry.digest}): "
                "no valid signature for the configured key"
            )
            continue
        manifest = resolve(client, image, entry.digest)
        return _point(client, image, environment, manifest, verified=None, log=log)
    unsigned = f" ({skipped} skipped: not signed)" if skipped else ""
    raise NoHistoryError(
        f"{image.name}: no earlier digest in the history of {environment!r}{unsigned}",
        hint="pass --to TAG|DIGEST, or promote first",
    )


def _point(
    client: RegistryClient,
    image: Reference,
    environment: str,
    manifest: Manifest,
    *,
    verified: Verifier | None,
    log: Log,
) -> Promotion:
    """History first, then the environment tag (see the module docstring). ``verified`` None:
    the caller has verified the signature already."""
    repo = image.repository
    target = image.with_digest(manifest.digest)
    if verified is not None and not verified(target):
        raise UnsignedError(
            f"{target} is not signed (no valid signature for the configured key): "
            f"{environment} was not changed",
            hint="sign it first: `invoke docker.sign`",
        )
    previous = client.digest(repo, environment)
    entries = envhistory.read(client, repo, environment)
    newest = entries[-1].digest if entries else None
    if previous == manifest.digest and newest == manifest.digest:
        log(f"{image.name}:{environment} is already at {manifest.digest}")
        return Promotion(environment, manifest.digest, previous, None, False)
    if previous is not None and previous != manifest.digest and newest != previous:
        kept = envhistory.append(client, repo, environment, client.manifest(repo, previous))
        log(
            f"{image.name}:{environment} was at {previous} without a history entry "
            f"(written outside the pipeline): recorded it as {kept.tag}"
        )
        newest = previous
    stamp = None
    if newest != manifest.digest:
        stamp = envhistory.append(client, repo, environment, manifest, log=log).tag
    if previous != manifest.digest:
        client.put_manifest(repo, environment, manifest)
    log(
        f"{image.name}:{environment} -> {manifest.digest}"
        f" (was {previous or 'unset'}; history {stamp or 'already written'})"
    )
    return Promotion(environment, manifest.digest, previous, stamp, previous != manifest.digest)


@dataclass(frozen=True)
class PromoteRequest:
    """``docker.promote --to ENV [--ref R]`` or ``docker.rollback --env ENV [--to R]``."""

    environment: str
    ref: str | None = None
    image: str | None = None
    record: str | None = None
    rollback: bool = False


def promote_request(
    request: PromoteRequest, *, root: Path, settings: Settings, environ: Mapping[str, str]
) -> str:
    """Point (or point back) an environment tag at a signed digest; the line to print."""
    from pipeline.registry.client import client_for
    from pipeline.release.sign import verifier_from_env

    allowed = environments(settings.extra.get("environments"))
    check_environment(request.environment, allowed)
    image, ref = request.image or settings.image, request.ref
    if not request.rollback and ref is None:
        # The record's digest lives in the record's repository, whatever is configured.
        recorded, ref = pushed_digest(
            root / (request.record or settings.record), hint="push first, or pass --ref"
        )
        image = request.image or recorded
    target = parse_reference(image)
    client = client_for(target.host, extra=settings.extra, environ=environ)
    verified = verifier_from_env(environ)
    env = request.environment
    if request.rollback:
        result = rollback(client, target, env, ref, allowed=allowed, verified=verified)
    else:
        assert ref is not None
        result = promote(client, target, env, ref, allowed=allowed, verified=verified)
    return f"{env}={result.digest}"
