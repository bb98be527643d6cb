"""The build record, ``build/image.toml``: what ``docker.build`` made, read by every later task
instead of recomputing it. Written atomically, so a killed build never leaves half a record."""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from pipeline.errors import UsageError

SCHEMA = 1


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
        return cls(**{k: v for k, v in data.items() if k in names})


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
