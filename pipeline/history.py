"""One history line per ``docker.build`` / ``docker.publish`` run, success or failure.

The entry comes from this run's build record when there is one; a run that failed before its
record was written is described by its planned tags (never by a stale record of an earlier run).
The format and the file are ``pipeline.report``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.build import BuildOptions, BuildResult, run_build
from pipeline.config import Settings
from pipeline.context import BuildContext
from pipeline.errors import PipelineError
from pipeline.report import HistoryEntry, append_history, entry_from_record
from pipeline.versioning import ImageTags

DEFAULT_PATH = "build/history.jsonl"


def history_path(root: Path, extra: Mapping[str, Any]) -> Path:
    """``[tool.pipeline] history`` (default ``build/history.jsonl``), relative to ``root``."""
    return root / str(extra.get("history", DEFAULT_PATH))


def planned_entry(
    context: BuildContext,
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


def build_with_history(
    history: Path,
    *,
    root: Path,
    settings: Settings,
    build_context: BuildContext,
    tags: ImageTags,
    options: BuildOptions,
    environ: Mapping[str, str],
    record_path: Path | None = None,
) -> BuildResult:
    """``pipeline.build.run_build``, then one ``kind="build"`` line in ``history``: success
    from the new record, or failure (the error's one line) before the error goes on up."""
    try:
        result = run_build(
            root=root,
            settings=settings,
            build_context=build_context,
            tags=tags,
            options=options,
            environ=environ,
            record_path=record_path,
        )
    except PipelineError as exc:
        entry = planned_entry(
            build_context, tags, result="failure", kind="build", error=exc.one_line()
        )
        append_history(history, entry)
        raise
    append_history(history, entry_from_record(result.record, result="success", kind="build"))
    return result
