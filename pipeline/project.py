"""pyproject.toml as Invoke's first config layer: ``[tool.pipeline]`` plus the project metadata
that becomes image labels.

Every `invoke` run reads it, and parsing TOML (importing ``tomllib`` included) costs more than
the rest of `invoke docker.tags`'s own work, so the parsed document is kept beside the file
the way Python keeps bytecode: ``__pycache__/pyproject.toml.json``, keyed by the file's size and
CRC-32, never trusted when either differs, rewritten after each parse when ``write_cache``.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

CACHE_VERSION = 1


def cache_path(path: Path) -> Path:
    """Where the parsed ``path`` is kept: its folder's ``__pycache__``."""
    return path.parent / "__pycache__" / f"{path.name}.json"


def load_pyproject(path: Path, *, write_cache: bool = False) -> dict[str, Any]:
    """The whole pyproject.toml as a dict; a missing file is an empty project. A cache entry
    for these exact bytes is used as is; otherwise the TOML is parsed (and, with
    ``write_cache``, the result kept for the next run)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    key = {"version": CACHE_VERSION, "size": len(raw), "crc32": zlib.crc32(raw)}
    cache = cache_path(path)
    cached = _read_cache(cache, key)
    if cached is not None:
        return cached
    data = _parse_toml(raw, path)
    if write_cache:
        _write_cache(cache, key, data)
    return data


def _parse_toml(raw: bytes, path: Path) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})", hint="fix the file") from exc


def _read_cache(cache: Path, key: Mapping[str, int]) -> dict[str, Any] | None:
    try:
        entry = json.loads(cache.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    data = entry.get("data")
    return data if isinstance(data, dict) else None


def _write_cache(cache: Path, key: Mapping[str, int], data: dict[str, Any]) -> None:
    """Best effort, like bytecode: a read-only checkout, or TOML values JSON cannot hold
    (dates), leave no cache and change nothing else."""
    try:
        text = json.dumps({"key": key, "data": data}, allow_nan=False)
    except (TypeError, ValueError):
        return
    partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(exist_ok=True)
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, cache)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def invoke_defaults(pyproject: Mapping[str, Any]) -> dict[str, Any]:
    """The mapping Invoke's ``docker`` config starts from: ``[tool.pipeline]`` plus the project
    metadata that becomes image labels. Every key here can be overridden by ``INVOKE_DOCKER_*``."""
    project = pyproject.get("project", {})
    section = dict(pyproject.get("tool", {}).get("pipeline", {}))
    license_ = project.get("license", "")
    if isinstance(license_, Mapping):
        license_ = license_.get("text", "")
    section.setdefault("title", project.get("name", ""))
    section.setdefault("description", project.get("description", ""))
    section.setdefault("licenses", license_)
    # Invoke cannot cast an INVOKE_* variable onto a list: platforms stay a comma string.
    if isinstance(section.get("platforms"), list):
        section["platforms"] = ",".join(section["platforms"])
    return section
