"""Pure: a build context and a policy become image tags, a version and OCI labels.

No I/O here: the context is built at the edge (``pipeline.gitref``) and the list of released
versions, when the policy needs it, is read from the registry by the caller.

``docker.tags`` imports this on every run, so what only some paths need is paid for on those
paths: the SemVer pattern is compiled (and cached by ``re``) on the first tag it parses,
``packaging`` is imported only to order versions, ``hashlib`` only to cut an over-long tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pipeline.clock import utc_from_epoch
from pipeline.config import Settings, TagPolicy
from pipeline.errors import InvalidRefError, UsageError
from pipeline.gitref import RefFlags, ReleaseContext, resolve
from pipeline.oci.labels import LABEL, ImageTags

if TYPE_CHECKING:
    from packaging.version import Version

MAX_TAG = 128
# A pattern string, not a compiled pattern: ``re`` compiles it on first use only.
SEMVER = (
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


class SemVer(NamedTuple):
    """A release version parsed from a git tag; build metadata is dropped."""

    major: int
    minor: int
    patch: int
    pre: str = ""

    @classmethod
    def parse(cls, text: str) -> SemVer | None:
        match = re.match(SEMVER, text.strip())
        if not match:
            return None
        return cls(
            int(match["major"]), int(match["minor"]), int(match["patch"]), match["pre"] or ""
        )

    @property
    def stable(self) -> bool:
        return not self.pre

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{self.pre}" if self.pre else core

    def sort_key(self) -> Version:
        """Ordered with ``packaging`` (pre-releases sort below their release)."""
        from packaging.version import InvalidVersion, Version

        try:
            return Version(str(self))
        except InvalidVersion:
            return Version(f"{self.major}.{self.minor}.{self.patch}.dev0")


def sanitize_tag(raw: str) -> str:
    """A valid Docker tag: ``[A-Za-z0-9_.-]`` only, ``-`` runs collapsed, no leading ``.``/``-``,
    case kept; over 128 characters it is cut to 119 plus ``-`` and 8 hex of its SHA-256."""
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", raw)
    tag = re.sub(r"-{2,}", "-", tag).lstrip(".-")
    if len(tag) > MAX_TAG:
        import hashlib

        digest = hashlib.sha256(tag.encode()).hexdigest()[:8]
        tag = f"{tag[:119]}-{digest}"
    return tag


def normalize_image(image: str) -> str:
    """Image names are lowercase (``ghcr.io/MyOrg/App`` -> ``ghcr.io/myorg/app``)."""
    return image.strip().lower()


def parse_release(tag_ref: str) -> SemVer:
    """The version of a release tag, or ``InvalidRefError`` naming the expected form."""
    version = SemVer.parse(tag_ref)
    if version is None:
        raise InvalidRefError(
            f"tag {tag_ref!r} is not a release version",
            hint="expected vMAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], e.g. v1.2.3",
        )
    return version


def highest_stable(released: Iterable[str]) -> SemVer | None:
    """The highest stable version among tags such as ``v1.9.0``, ``2.0.0``, ``latest``."""
    versions = [v for t in released if (v := SemVer.parse(t)) is not None and v.stable]
    return max(versions, key=SemVer.sort_key, default=None)


class _Names(NamedTuple):
    names: list[str]
    version: str
    latest: bool = False
    immutable: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()


def compute_tags(
    context: ReleaseContext, policy: Settings, released: Iterable[str] = ()
) -> ImageTags:
    """Tags, version and labels for one build; see the table in README.md."""
    rules = policy.tags
    if context.tag is not None:
        named = _release(context.tag, rules, released)
    elif context.is_pull_request:
        head = (context.pr_head_sha or context.sha)[: rules.sha_length]
        named = _Names([f"pr-{context.pr_number}"], f"pr-{context.pr_number}-{head}")
    elif context.event == "local":
        branch = sanitize_tag(context.branch or "detached")
        first = f"dev-{branch}-{context.sha[: rules.sha_length]}"
        first += "-dirty" if context.dirty else ""
        named = _Names([first, "dev"], sanitize_tag(first), unique=(first,))
    else:
        named = _branch(context, rules)
    names = ["latest", *named.names] if named.latest else named.names
    return ImageTags(
        image=normalize_image(policy.image),
        version=named.version,
        tag_names=tuple(dict.fromkeys(sanitize_tag(n) for n in names)),
        labels=compute_labels(context, policy, named.version),
        latest=named.latest,
        immutable=tuple(sanitize_tag(n) for n in named.immutable),
        unique=tuple(sanitize_tag(n) for n in named.unique),
    )


def _release(tag: str, rules: TagPolicy, released: Iterable[str]) -> _Names:
    """``v1.2.3``: the version tags (immutable), then ``1.2`` and ``1`` for a stable release;
    ``latest`` by the policy."""
    semver = parse_release(tag)
    version = str(semver)
    names = [f"v{version}"] if rules.prefix_v else []
    names.append(version)
    immutable = tuple(names)
    latest = False
    if semver.stable:
        if rules.minor:
            names.append(f"{semver.major}.{semver.minor}")
        if rules.major and semver.major > 0:
            names.append(str(semver.major))
        if rules.latest == "release":
            best = highest_stable(released)
            latest = best is None or semver.sort_key() >= best.sort_key()
    return _Names(names, version, latest, immutable)


def _branch(context: ReleaseContext, rules: TagPolicy) -> _Names:
    """A branch push: the branch and ``branch-sha``; the default branch takes ``latest``."""
    if context.branch is None:
        raise InvalidRefError(
            f"ref {context.ref!r} is neither a branch, a tag nor a pull request",
            hint="pass --ref refs/heads/NAME or refs/tags/vX.Y.Z",
        )
    sha = context.sha[: rules.sha_length]
    branch = sanitize_tag(context.branch)
    unique = (f"{branch}-{sha}",)
    default_branch = context.default_branch or rules.default_branch
    if context.branch == default_branch and rules.latest == "branch":
        return _Names([f"{branch}-{sha}"], sanitize_tag(f"dev-{branch}-{sha}"), True, (), unique)
    return _Names(
        [branch, f"{branch}-{sha}"], sanitize_tag(f"dev-{branch}-{sha}"), False, (), unique
    )


def compute_labels(context: ReleaseContext, policy: Settings, version: str) -> dict[str, str]:
    """OCI labels. ``created`` is the commit time (or SOURCE_DATE_EPOCH, applied at the edge),
    never the clock, so two builds of one commit carry identical labels."""
    from pipeline.redact import public_url

    source = public_url(context.source or policy.source)
    labels = {
        "created": utc_from_epoch(context.commit_time) if context.commit_time is not None else "",
        "revision": context.sha,
        "source": source,
        "version": version,
        "title": policy.title,
        "description": policy.description,
        "licenses": policy.licenses,
        "url": public_url(policy.url) or source,
    }
    return {LABEL + key: value for key, value in labels.items() if value}


def image_tags(
    environ: Mapping[str, str],
    cwd: Path,
    settings: Settings,
    flags: RefFlags | None = None,
    released: Iterable[str] = (),
) -> tuple[ReleaseContext, ImageTags]:
    """The build context, and the tags, version and labels ``docker.tags`` prints for it:
    ``pipeline.gitref.resolve`` then ``compute_tags``."""
    context = resolve(environ, cwd, flags)
    return context, compute_tags(context, settings, released)


def tag_lines(result: ImageTags, format: str, environ: Mapping[str, str]) -> list[str]:
    """What ``docker.tags`` prints: ``json``; ``text``; or ``github``, the text with the step
    outputs written (``GITHUB_OUTPUT`` must be set)."""
    import json

    if format not in ("text", "json", "github"):
        raise UsageError(f"--format {format!r}: expected text, json or github")
    document = result.as_json()
    if format == "json":
        return [json.dumps(document, indent=2)]
    if format == "github":
        from pipeline.github import report_to_github

        if not environ.get("GITHUB_OUTPUT"):
            raise UsageError("--format github: GITHUB_OUTPUT is not set")
        outputs = {
            "version": result.version,
            "tags": "\n".join(result.tags),
            "tag_names": "\n".join(result.tag_names),
            "labels": "\n".join(f"{k}={v}" for k, v in result.labels.items()),
            "latest": "true" if result.latest else "false",
            "json": json.dumps(document),
        }
        report_to_github(environ, outputs=outputs)
    labels = [f"  {key}={value}" for key, value in result.labels.items()]
    return [
        f"version: {result.version}",
        "tags:",
        *(f"  {t}" for t in result.tags),
        "labels:",
        *labels,
    ]
