"""One history line per ``docker.build`` / ``docker.publish`` run, success or failure.

The entry comes from this run's build record when there is one; a run that failed before its
record was written is described by its planned tags (never by a stale record of an earlier run).
The format and the file are ``pipeline.history.report``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.gitref import ReleaseContext
from pipeline.history.report import HistoryEntry
from pipeline.oci.labels import ImageTags

DEFAULT_PATH = "build/history.jsonl"


def history_path(root: Path, extra: Mapping[str, Any]) -> Path:
    """``[tool.pipeline] history`` (default ``build/history.jsonl``), relative to ``root``."""
    return root / str(extra.get("history", DEFAULT_PATH))


def planned_entry(
    context: ReleaseContext,
    tags: ImageTags,
    *,
    result: str,
    kind: str,
    steps: Mapping[str, float] | None = None,
    error: str = "",
) -> HistoryEntry:
    """An entry for a run without a build record of its own (it failed before writing one)."""
    return HistoryEntry(
        result=result,
        kind=kind,
        commit=context.sha,
        ref=context.ref,
        image=tags.image,
        version=tags.version,
        tags=tags.tag_names,
        steps=dict(steps or {}),
        error=error,
    )
