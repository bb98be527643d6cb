"""Which tags a push or merge writes, in which order, and which it must not touch (pure):
release tags are immutable (one image each), moving tags (``latest``, ``1.2``, ``develop``) are
written last and only forward, per the ``latest`` policy."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.build.record import BuildRecord
from pipeline.errors import RegistryError
from pipeline.release.tags import SemVer, highest_stable, sanitize_tag


class TagConflictError(RegistryError):
    """An immutable release tag already names another digest."""


@dataclass(frozen=True)
class TagPlan:
    """What to write, pure. ``conflicts`` refuse the push; ``unchanged`` already point at the
    digest; ``fixed`` (immutable + unique) are written first, ``moving`` last; ``held`` are
    moving tags this build must not take (a newer release owns them), with the reason."""

    conflicts: tuple[tuple[str, str], ...] = ()
    unchanged: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    moving: tuple[str, ...] = ()
    held: tuple[tuple[str, str], ...] = ()


def moving_tags(
    record: BuildRecord, latest_policy: str, released: Iterable[str]
) -> tuple[list[str], list[tuple[str, str]]]:
    """The record's moving tags this build may take, given the releases already in the
    registry: a release takes ``latest`` (policy ``release``), ``1.2`` and ``1`` only if no
    higher stable release of that line exists. Returns (tags, held with reasons)."""
    fixed = {*record.immutable, *record.unique}
    tags = [t for t in record.tags if t not in fixed]
    version = SemVer.parse(record.version) if record.immutable else None
    if version is None:
        return tags, []
    others = [t for t in released if t not in record.immutable]
    held: list[tuple[str, str]] = []
    result: list[str] = []
    if latest_policy == "release" and version.stable and "latest" not in tags:
        tags.insert(0, "latest")
    for tag in tags:
        if tag == "latest":
            line: list[str] = others
        elif tag == f"{version.major}.{version.minor}":
            line = [t for t in others if _line(t, version.major, version.minor)]
        elif tag == str(version.major):
            line = [t for t in others if _line(t, version.major, None)]
        else:
            result.append(tag)
            continue
        if tag == "latest" and latest_policy != "release":
            result.append(tag)
            continue
        best = highest_stable(line)
        if best is not None and best.sort_key() > version.sort_key():
            held.append((tag, f"{best} is newer"))
        else:
            result.append(tag)
    return result, held


def _line(tag: str, major: int, minor: int | None) -> bool:
    v = SemVer.parse(tag)
    return v is not None and v.major == major and (minor is None or v.minor == minor)


def plan_tags(
    record: BuildRecord,
    digest: str,
    existing: Mapping[str, str | None],
    *,
    latest_policy: str = "branch",
    released: Iterable[str] = (),
) -> TagPlan:
    """Pure: which tags to write for ``digest`` given what the registry has (``existing``:
    tag -> digest or None, for the immutable and unique tags at least)."""
    conflicts = tuple(
        (tag, found)
        for tag in record.immutable
        if (found := existing.get(tag)) is not None and found != digest
    )
    fixed_all = list(dict.fromkeys([*record.immutable, *record.unique]))
    unchanged = tuple(t for t in fixed_all if existing.get(t) == digest)
    fixed = tuple(t for t in fixed_all if existing.get(t) != digest)
    moving, held = moving_tags(record, latest_policy, released)
    return TagPlan(conflicts, unchanged, fixed, tuple(moving), tuple(held))


def staging_tag(record: BuildRecord) -> str:
    """The tag the upload writes: one that names this build only, never a moving one."""
    if record.unique:
        return record.unique[0]
    if record.immutable:
        return record.immutable[0]

    return sanitize_tag(record.version)


def refuse_conflicts(record: BuildRecord, conflicts: Sequence[tuple[str, str]]) -> None:
    if conflicts:
        tag, found = conflicts[0]
        raise TagConflictError(
            f"{record.image}:{tag} already exists at {found}: release tags are immutable, "
            "refusing to overwrite (nothing was changed)",
            hint="release a new version instead",
        )
