"""A build and its history line: ``run_build``, then one ``kind="build"`` entry, success or
failure, in the history file (``pipeline.history``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline.build.plan import BuildOptions, BuildResult, run_build
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.gitref import ReleaseContext
from pipeline.history.report import append_history, entry_from_record
from pipeline.history.store import planned_entry
from pipeline.oci.labels import ImageTags


def build_with_history(
    history: Path,
    *,
    root: Path,
    settings: Settings,
    build_context: ReleaseContext,
    tags: ImageTags,
    options: BuildOptions,
    environ: Mapping[str, str],
    record_path: Path | None = None,
) -> BuildResult:
    """``pipeline.build.plan.run_build``, then one ``kind="build"`` line in ``history``: success
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
