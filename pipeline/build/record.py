"""The build record, ``build/image.toml``: what ``docker.build`` made, read by every later task
instead of recomputing it. Written atomically, so a killed build never leaves half a record."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from pipeline.errors import PipelineError, UsageError

SCHEMA = 1


class RecordError(UsageError):
    """``build/image.toml`` is not a valid build record (a field missing, of the wrong type, or
    contradicting the ref it was built from): exit 2, nothing pushed."""


@dataclass
class BuildRecord:
    """One build. ``digest`` is the image index digest once known (after a push, or from the
    local store); ``sizes`` are compressed bytes per platform."""

    image: str
    version: str
    tags: list[str]
    platforms: list[str]
    immutable: list[str] = field(default_factory=list)
    unique: list[str] = field(default_factory=list)
    latest: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    digest: str = ""
    loaded: bool = False
    pushed: bool = False
    revision: str = ""
    ref: str = ""
    event: str = ""
    duration_s: float = 0.0
    cached_steps: int = 0
    total_steps: int = 0
    sizes: dict[str, int] = field(default_factory=dict)
    base_name: str = ""
    base_digest: str = ""
    built_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """The first full tag: how the local store and the registry know this build."""
        return f"{self.image}:{self.tags[0]}"

    @property
    def full_tags(self) -> list[str]:
        return [f"{self.image}:{t}" for t in self.tags]

    def write(self, path: Path) -> None:
        data = {"schema": SCHEMA, **asdict(self)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(tomli_w.dumps(_drop_empty(data)).encode())
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> BuildRecord:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(
                f"no build record at {path}", hint="run `invoke docker.build` first"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: corrupt build record ({exc})", hint="rebuild") from exc
        if data.pop("schema", None) != SCHEMA:
            raise UsageError(f"{path}: build record of another schema", hint="rebuild")
        names = {f.name for f in fields(cls)}
        return cls(**check({k: v for k, v in data.items() if k in names}, path))


def _drop_empty(data: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: leave out what is unset rather than invent values."""
    return {k: v for k, v in data.items() if v is not None}


def pushed_digest(path: Path, hint: str) -> tuple[str, str]:
    """``(image, digest)`` of the record at ``path`` once it was pushed, else a ``UsageError``
    with ``hint`` (for the tasks that work on what was pushed)."""
    record = BuildRecord.read(path)
    if not (record.pushed and record.digest):
        raise UsageError(f"{record.image} has not been pushed", hint=hint)
    return record.image, record.digest


# --- the schema, checked on every read ---


LABEL_VERSION = "org.opencontainers.image.version"
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_RELEASE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
REQUIRED = ("image", "version", "tags", "platforms")


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _string(value: object) -> bool:
    return isinstance(value, str)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _boolean(value: object) -> bool:
    return isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _string_table(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _int_table(value: object) -> bool:
    return isinstance(value, dict) and all(_integer(v) for v in value.values())


def _table(value: object) -> bool:
    return isinstance(value, dict)


TYPES: dict[str, tuple[Callable[[object], bool], str]] = {
    "image": (_string, "a string"),
    "version": (_string, "a string"),
    "tags": (_strings, "a list of strings"),
    "platforms": (_strings, "a list of strings"),
    "immutable": (_strings, "a list of strings"),
    "unique": (_strings, "a list of strings"),
    "latest": (_boolean, "a boolean"),
    "labels": (_string_table, "a table of strings"),
    "digest": (_string, "a string"),
    "loaded": (_boolean, "a boolean"),
    "pushed": (_boolean, "a boolean"),
    "revision": (_string, "a string"),
    "ref": (_string, "a string"),
    "event": (_string, "a string"),
    "duration_s": (_number, "a number"),
    "cached_steps": (_integer, "an integer"),
    "total_steps": (_integer, "an integer"),
    "sizes": (_int_table, "a table of integers"),
    "base_name": (_string, "a string"),
    "base_digest": (_string, "a string"),
    "built_at": (_string, "a string"),
    "extra": (_table, "a table"),
}


def check(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """``data`` (the record's fields) if it is a valid record, else ``RecordError``."""

    def refuse(field: str, problem: str) -> RecordError:
        return RecordError(f"{path}: field {field!r} {problem}", hint="rebuild (docker.build)")

    for name in REQUIRED:
        if name not in data:
            raise refuse(name, "is missing")
    for name, value in data.items():
        test, wanted = TYPES[name]
        if not test(value):
            raise refuse(name, f"must be {wanted}, not {_kind(value)}")
    _check_values(data, refuse)
    _check_against_ref(data, refuse)
    return dict(data)


def _check_values(data: Mapping[str, Any], refuse: Callable[[str, str], PipelineError]) -> None:
    from pipeline.oci.platform import parse_platforms
    from pipeline.oci.reference import parse_reference

    try:
        image = parse_reference(data["image"])
    except PipelineError as exc:
        raise refuse("image", f"is not an image name ({exc.message})") from None
    if image.tag or image.digest or "@" in data["image"]:
        raise refuse("image", f"must be a name without a tag or digest, not {data['image']!r}")
    if not data["version"].strip():
        raise refuse("version", "is empty")
    if not data["tags"]:
        raise refuse("tags", "is empty: a build has at least one tag")
    for name in ("tags", "immutable", "unique"):
        for tag in data.get(name, []):
            if not _TAG.match(tag):
                raise refuse(name, f"holds {tag!r}, which is not a valid tag")
    if not data["platforms"]:
        raise refuse("platforms", "is empty")
    try:
        parse_platforms(data["platforms"], what="platforms")
    except PipelineError as exc:
        raise refuse("platforms", f"holds an invalid platform ({exc.message})") from None
    digest = data.get("digest", "")
    if digest and not _DIGEST.match(digest):
        raise refuse("digest", f"is not a sha256 digest: {digest!r}")


def _check_against_ref(
    data: Mapping[str, Any], refuse: Callable[[str, str], PipelineError]
) -> None:
    """The version, the immutable release tags and the version label are derived again from
    the record's ref and must agree with it."""
    version, tags = data["version"], set(data["tags"])
    for name in ("immutable", "unique"):
        stray = [t for t in data.get(name, []) if t not in tags]
        if stray:
            raise refuse(name, f"holds {stray[0]!r}, which is not one of the record's tags")
    ref = data.get("ref", "")
    release = _release(ref.removeprefix("refs/tags/")) if ref.startswith("refs/tags/") else None
    if ref.startswith("refs/tags/"):
        if release is None:
            raise refuse("ref", f"{ref!r} is not a release tag")
        if version != str(release):
            raise refuse("version", f"is {version!r}, but the ref {ref} is version {release}")
        if not data.get("immutable"):
            raise refuse("immutable", f"is empty, but the ref {ref} is a release")
    elif ref and data.get("immutable"):
        raise refuse(
            "immutable",
            f"holds {data['immutable'][0]!r}, but the ref {ref} is not a release tag",
        )
    for tag in data.get("immutable", []):
        if _release(tag) != version:
            raise refuse("immutable", f"holds {tag!r}, which is not the version {version}")
    labelled = data.get("labels", {}).get(LABEL_VERSION)
    if labelled is not None and labelled != version:
        raise refuse("version", f"is {version!r}, but the image's version label is {labelled!r}")


def _release(tag: str) -> str | None:
    """The version a release tag names (``v1.2.3+build.5`` is ``1.2.3``), as
    ``pipeline.release.tags`` derives it; None for anything else."""
    version = tag.strip().removeprefix("v").partition("+")[0]
    return version if _RELEASE.match(version) else None
