"""``docker.prune``: retention through the registry's HTTP API.

Kept forever: release tags (``v1.2.3``, ``1.2.3``), release lines (``1.2``, ``1``), ``latest``,
environment tags and their history, branch heads (``develop``), anything unrecognised.
Per branch (``<branch>-<sha>``, ``dev-<branch>-<sha>``) and per pull request (``pr-N``,
``pr-N-<sha>``): the newest ``keep`` builds stay, older ones beyond them, or older than ``days``,
go.

What a tag is comes from the ref that produced its image, not from the shape of its name: the
image's ``org.opencontainers.image.version`` label (``dev-<branch>-<sha>`` for a branch build,
``pr-N-<sha>`` for a pull request, ``1.2.3`` for a release) says which build it is, so only
that build's own tag (``<branch>-<sha>``, ``dev-<branch>-<sha>``, ``pr-N``) is a build; any
other tag on it is a head or a line and is kept. A branch named ``fix-dead``, ``release-2025``
or ``JIRA-1234`` is a branch head, never a build. An image without the label is kept.

A digest is deleted (``DELETE /v2/<name>/manifests/<digest>``, which removes all its tags)
only when EVERY tag pointing at it goes; cosign signatures/attestations
(``sha256-<hex>.sig``) go with their image. The plan is pure; deleting needs ``yes``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pipeline.clock import parse_utc
from pipeline.config import Settings
from pipeline.errors import PipelineError, RegistryError, UsageError
from pipeline.oci.reference import parse_reference
from pipeline.registry.client import RegistryClient
from pipeline.release.tags import SemVer

Log = Callable[[str], None]
_SIGNATURE = re.compile(r"^sha256-([0-9a-f]{64})\.(sig|att|sbom)$")
_LINE = re.compile(r"^v?\d+(\.\d+)?$")
_PR = re.compile(r"^pr-(\d+)(?:-([0-9a-f]{4,40}))?$")
_DEV = re.compile(r"^dev-(?P<branch>.+)-(?P<sha>[0-9a-f]{4,40})(?:-dirty)?$")
_BRANCH = re.compile(r"^(?P<branch>.+)-(?P<sha>[0-9a-f]{4,40})$")
_HISTORY = re.compile(r"^(?P<env>.+)-\d{20}$")
_PR_VERSION = re.compile(r"^pr-(\d+)-[0-9a-f]{4,40}$")
_DEV_VERSION = re.compile(r"^dev-(?P<branch>.+)-(?P<sha>[0-9a-f]{4,40})(?:-dirty)?$")
CREATED = "org.opencontainers.image.created"
VERSION = "org.opencontainers.image.version"


@dataclass(frozen=True)
class Retention:
    keep: int = 10
    days: int = 30
    environments: tuple[str, ...] = ("staging", "production")

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise UsageError(f"--keep {self.keep}: keep at least 1 build per branch")
        if self.days < 1:
            raise UsageError(f"--days {self.days}: must be at least 1")


@dataclass(frozen=True)
class Kind:
    """``kind`` is release, line, latest, environment, history, signature, pr, branch, dev or
    other; ``group`` the branch or PR a prunable tag belongs to; ``head`` for ``pr-N``."""

    kind: str
    group: str = ""
    head: bool = False

    @property
    def prunable(self) -> bool:
        return self.kind in ("pr", "branch", "dev")


def classify(tag: str, environments: Sequence[str] = ("staging", "production")) -> Kind:
    """Pure: what a tag is, for retention."""
    if tag in environments:
        return Kind("environment")
    history = _HISTORY.match(tag)
    if history and history.group("env") in environments:
        return Kind("history")
    if _SIGNATURE.match(tag):
        return Kind("signature")
    if SemVer.parse(tag) is not None:
        return Kind("release")
    if tag == "latest":
        return Kind("latest")
    if _LINE.match(tag):
        return Kind("line")
    if pr := _PR.match(tag):
        return Kind("pr", f"pr-{pr.group(1)}", head=pr.group(2) is None)
    if dev := _DEV.match(tag):
        return Kind("dev", f"dev-{dev.group('branch')}")
    if branch := _BRANCH.match(tag):
        return Kind("branch", branch.group("branch"))
    return Kind("other")


def classify_built(
    tag: str, version: str | None, environments: Sequence[str] = ("staging", "production")
) -> Kind:
    """Pure: what a tag is, from the version label of the image it points at (None: the image
    has none); see the module docstring. Environment, history and signature tags are the
    pipeline's own names."""
    named = classify(tag, environments)
    if named.kind in ("environment", "history", "signature"):
        return named
    if not version:
        return Kind("other")
    release = SemVer.parse(version)
    if release is not None:
        if SemVer.parse(tag) == release:
            return Kind("release")
        return Kind("latest") if tag == "latest" else Kind("line")
    if pr := _PR_VERSION.match(version):
        if tag == f"pr-{pr.group(1)}":
            return Kind("pr", tag, head=True)
        return Kind("pr", f"pr-{pr.group(1)}") if tag == version else Kind("other")
    if dev := _DEV_VERSION.match(version):
        if tag == version:
            return Kind("dev", f"dev-{dev.group('branch')}")
        if tag == version.removeprefix("dev-"):
            return Kind("branch", dev.group("branch"))
    return Kind("other")


@dataclass(frozen=True)
class Decision:
    tag: str
    digest: str
    delete: bool
    reason: str


@dataclass
class Plan:
    decisions: list[Decision] = field(default_factory=list)
    delete_digests: dict[str, list[str]] = field(default_factory=dict)

    @property
    def kept(self) -> list[Decision]:
        return [d for d in self.decisions if not d.delete]


def plan(
    tags: Mapping[str, str],
    created: Mapping[str, datetime | None],
    retention: Retention,
    now: datetime,
    versions: Mapping[str, str | None] | None = None,
) -> Plan:
    """Pure. ``tags``: tag -> digest; ``created``: digest -> build time (None if unknown);
    ``versions``: digest -> version label (``classify_built``; None: by tag names alone)."""
    if versions is None:
        kinds = {tag: classify(tag, retention.environments) for tag in tags}
    else:
        envs = retention.environments
        kinds = {tag: classify_built(tag, versions.get(tags[tag]), envs) for tag in tags}
    wanted = _unwanted(tags, created, kinds, retention, now)
    # A digest goes only if every image tag pointing at it goes.
    by_digest: dict[str, list[str]] = {}
    for tag, digest in tags.items():
        if kinds[tag].kind != "signature":
            by_digest.setdefault(digest, []).append(tag)
    doomed = {d for d, names in by_digest.items() if all(n in wanted for n in names)}
    result = Plan()
    for tag in sorted(tags):
        digest = tags[tag]
        decision = _decide(tag, digest, kinds[tag], wanted, doomed, by_digest)
        result.decisions.append(decision)
        if decision.delete:
            result.delete_digests.setdefault(digest, []).append(tag)
    return result


def _unwanted(
    tags: Mapping[str, str],
    created: Mapping[str, datetime | None],
    kinds: Mapping[str, Kind],
    retention: Retention,
    now: datetime,
) -> dict[str, str]:
    """Tag -> why it should go: beyond the newest ``keep`` builds of its group, or older
    than ``days`` (a group's head only by age)."""
    wanted: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for tag, kind in kinds.items():
        if kind.prunable:
            groups.setdefault(kind.group, []).append(tag)
    cutoff = now - timedelta(days=retention.days)
    for members in groups.values():
        builds = [t for t in members if not kinds[t].head]
        dated = sorted(
            (t for t in builds if created.get(tags[t]) is not None),
            key=lambda t: (created[tags[t]], t),
            reverse=True,
        )
        for rank, tag in enumerate(dated):
            when = created[tags[tag]]
            assert when is not None
            if rank >= retention.keep:
                wanted[tag] = f"beyond the newest {retention.keep} of its branch"
            elif when < cutoff:
                wanted[tag] = f"older than {retention.days} days"
        for tag in members:
            when = created.get(tags[tag])
            if kinds[tag].head and when is not None and when < cutoff:
                wanted[tag] = f"older than {retention.days} days"
    return wanted


def _decide(
    tag: str,
    digest: str,
    kind: Kind,
    wanted: Mapping[str, str],
    doomed: set[str],
    by_digest: Mapping[str, list[str]],
) -> Decision:
    if kind.kind == "signature":
        match = _SIGNATURE.match(tag)
        assert match is not None
        if f"sha256:{match.group(1)}" in doomed:
            return Decision(tag, digest, True, "signature of a pruned image")
        return Decision(tag, digest, False, "signature")
    if digest in doomed:
        return Decision(tag, digest, True, wanted[tag])
    if tag in wanted:
        keepers = [n for n in by_digest[digest] if n not in wanted]
        return Decision(tag, digest, False, f"kept: {keepers[0]} points at the same digest")
    return Decision(tag, digest, False, _keep_reason(kind))


def _keep_reason(kind: Kind) -> str:
    return {
        "release": "release: kept forever",
        "line": "release line",
        "latest": "latest",
        "environment": "environment",
        "history": "promotion history",
        "other": "not a branch or PR build",
    }.get(kind.kind, "within retention")


def created_at(config: Mapping[str, object]) -> datetime | None:
    """The build time of an image config: the ``org.opencontainers.image.created`` label,
    else the config's ``created`` field."""
    inner = config.get("config")
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    candidates = [labels.get(CREATED) if isinstance(labels, dict) else None, config.get("created")]
    for value in candidates:
        if isinstance(value, str) and value:
            try:
                when = parse_utc(value)
            except ValueError:
                continue
            return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


def gather(
    client: RegistryClient, repository: str, environments: Sequence[str]
) -> tuple[dict[str, str], dict[str, datetime | None], dict[str, str | None]]:
    """Every tag's digest, and the build time and version label of every image digest
    (not the environment, history and signature tags), from the registry."""
    tags: dict[str, str] = {}
    for tag in client.tags(repository):
        digest = client.digest(repository, tag)
        if digest is not None:
            tags[tag] = digest
    created: dict[str, datetime | None] = {}
    versions: dict[str, str | None] = {}
    for tag, digest in tags.items():
        if classify(tag, environments).kind in ("environment", "history", "signature"):
            continue
        if digest not in created:
            try:
                config = client.image_config(repository, digest)
            except (RegistryError, ValueError):
                created[digest], versions[digest] = None, None
                continue
            created[digest], versions[digest] = created_at(config), _label(config, VERSION)
    return tags, created, versions


def _label(config: Mapping[str, object], name: str) -> str | None:
    inner = config.get("config")
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    value = labels.get(name) if isinstance(labels, dict) else None
    return value if isinstance(value, str) and value else None


class PruneError(PipelineError):
    """The plan changed under us: a protected tag now points at a doomed digest."""


def execute(
    client: RegistryClient,
    repository: str,
    result: Plan,
    retention: Retention,
    *,
    yes: bool,
    log: Log = print,
    delete: Callable[[str], None] | None = None,
) -> list[str]:
    """Print the plan; with ``yes``, delete its digests (after re-checking that no environment
    or release tag moved onto one of them) through ``delete`` (default: the registry API's
    DELETE; ghcr.io: ``pipeline.registry.ghcr.deleter_for``). Returns the deleted digests."""
    for decision in result.decisions:
        if decision.delete:
            verb = "delete" if yes else "would delete"
            log(f"{verb} {decision.tag} ({decision.digest[:19]}): {decision.reason}")
    kept = len(result.kept)
    log(
        f"{len(result.delete_digests)} digest(s) "
        f"{'to delete' if yes else 'would be deleted'}, {kept} tag(s) kept"
        + ("" if yes else " (dry run: pass --yes to delete)")
    )
    if not yes or not result.delete_digests:
        return []
    protected = _protected(client, repository, retention.environments)
    deleted = []
    for digest in result.delete_digests:
        if digest in protected:
            raise PruneError(
                f"{digest} is now pointed at by a release or environment tag: stopped",
                hint="run the prune again",
            )
        if delete is None:
            client.delete_manifest(repository, digest)
        else:
            delete(digest)
        deleted.append(digest)
    log(f"deleted {len(deleted)} digest(s)")
    return deleted


def _protected(client: RegistryClient, repository: str, environments: Iterable[str]) -> set[str]:
    environments = tuple(environments)
    protected = set()
    for tag in client.tags(repository):
        kind = classify(tag, environments).kind
        if kind in ("release", "environment", "history", "line", "latest", "other"):
            digest = client.digest(repository, tag)
            if digest:
                protected.add(digest)
    return protected


@dataclass(frozen=True)
class PruneRequest:
    """The flags of ``docker.prune``."""

    keep: int = 10
    days: int = 30
    yes: bool = False
    image: str | None = None


def prune_images(request: PruneRequest, *, settings: Settings, environ: Mapping[str, str]) -> None:
    """``docker.prune``: gather the repository's tags, plan by the retention, print the plan
    and (``yes``) delete. Releases and environments are never deleted."""
    from pipeline.registry.client import client_for
    from pipeline.registry.ghcr import deleter_for
    from pipeline.release.promote import environments

    envs = environments(settings.extra.get("environments"))
    retention = Retention(request.keep, request.days, envs)
    target = parse_reference(request.image or settings.image)
    client = client_for(target.host, extra=settings.extra, environ=environ)
    # ghcr.io deletes through the Packages API; the dry run plans the same on every registry.
    how = deleter_for(
        client, target.repository, extra=settings.extra, environ=environ, deleting=request.yes
    )
    delete = how.delete if request.yes else None
    tags, created, versions = gather(client, target.repository, retention.environments)
    result = plan(tags, created, retention, datetime.now(UTC), versions)
    if request.yes:
        print(how.describe)
    execute(client, target.repository, result, retention, yes=request.yes, delete=delete)
