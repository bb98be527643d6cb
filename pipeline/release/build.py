"""``docker.build`` as a release step: the git context and the tag policy name the image, then
``pipeline.build`` builds it and appends the history line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.build.plan import BuildOptions
from pipeline.build.record import BuildRecord
from pipeline.build.run import build_with_history
from pipeline.config import Settings
from pipeline.gitref import RefFlags
from pipeline.history.store import history_path
from pipeline.release.tags import image_tags


@dataclass(frozen=True)
class BuildRequest:
    """The flags of ``docker.build``, named as the flags are."""

    platform: tuple[str, ...] = ()
    push: bool = False
    load: bool = False
    cache: str | None = None
    builder: str | None = None
    target: str | None = None
    build_arg: tuple[str, ...] = ()
    progress: str = "auto"
    no_cache: bool = False
    push_by_digest: bool = False
    git: RefFlags = field(default_factory=RefFlags)

    def options(self) -> BuildOptions:
        return BuildOptions(
            platforms=self.platform,
            push=self.push,
            load=self.load,
            cache=self.cache,
            builder=self.builder,
            target=self.target,
            build_args=self.build_arg,
            progress=self.progress,
            no_cache=self.no_cache,
            push_by_digest=self.push_by_digest,
        )


def build_image(
    request: BuildRequest, *, root: Path, settings: Settings, environ: Mapping[str, str]
) -> list[str]:
    """Build, record, append history; the lines ``docker.build`` prints."""
    context, tags = image_tags(environ, Path.cwd(), settings, request.git)
    record_path = root / settings.record
    result = build_with_history(
        history_path(root, settings.extra),
        root=root,
        settings=settings,
        build_context=context,
        tags=tags,
        options=request.options(),
        environ=environ,
        record_path=record_path,
    )
    return build_lines(result.record, request.push_by_digest, record_path)


def build_lines(record: BuildRecord, by_digest: bool, record_path: Path) -> list[str]:
    """What a build made, one fact a line (pure)."""
    where = "pushed" if record.pushed else "loaded"
    name = f"{record.image}@{record.digest}" if by_digest else record.reference
    lines = [
        f"{where} {name} ({', '.join(record.platforms)}) in {record.duration_s:g}s, "
        f"{record.cached_steps}/{record.total_steps} steps cached",
        f"digest {record.digest or '(unknown)'}",
    ]
    if by_digest:
        lines.append(f"digest file {record.extra.get('digest_file', '')}")
    lines.append(f"base {record.base_name}@{record.base_digest}")
    lines += [f"size {p}: {size / 1e6:.1f} MB compressed" for p, size in record.sizes.items()]
    return [*lines, f"record {record_path}"]
