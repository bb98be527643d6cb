"""The edge where a build gets its name: the context resolved once (GitHub's environment, the
local checkout, flags), then the pure tag policy. Light on purpose: ``docker.tags`` imports it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from pipeline.config import Settings
from pipeline.context import BuildContext, resolve
from pipeline.versioning import ImageTags, compute_tags


def image_tags(
    environ: Mapping[str, str],
    cwd: Path,
    settings: Settings,
    *,
    event: str | None = None,
    ref: str | None = None,
    sha: str | None = None,
    pr: int | None = None,
    default_branch: str | None = None,
    released: Iterable[str] = (),
) -> tuple[BuildContext, ImageTags]:
    """The build context, and the tags, version and labels ``docker.tags`` prints for it:
    ``pipeline.context.resolve`` then ``pipeline.versioning.compute_tags``."""
    context = resolve(
        environ, cwd, event=event, ref=ref, sha=sha, pr=pr, default_branch=default_branch
    )
    return context, compute_tags(context, settings, released)
