"""``docker buildx build`` and its cache mounts."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_on_whales import DockerClient, DockerException

from pipeline.engine.cli import UNREACHABLE_HINT, docker, is_unreachable, run_cli, stderr_of
from pipeline.errors import EngineError


@dataclass
class BuildOutput:
    """What buildx printed and reported: its plain progress lines and its metadata file."""

    lines: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def build(
    context: Path,
    options: Mapping[str, Any],
    *,
    on_line: Callable[[str], None] | None = None,
    client: DockerClient | None = None,
) -> BuildOutput:
    """``docker buildx build`` with python-on-whales keyword ``options``; progress is read as
    plain text (for cached-step counts) and handed line by line to ``on_line``."""
    client = client or docker()
    output = BuildOutput()
    with tempfile.TemporaryDirectory(prefix="pipeline-build-") as tmp:
        metadata = Path(tmp) / "metadata.json"
        kwargs = {**options, "metadata_file": metadata, "progress": "plain", "stream_logs": True}
        try:
            stream = client.buildx.build(str(context), **kwargs)
            assert isinstance(stream, Iterator)
            for chunk in stream:
                for line in chunk.splitlines():
                    output.lines.append(line)
                    if on_line is not None:
                        on_line(line)
        except DockerException as exc:
            err = stderr_of(exc) or "\n".join(output.lines[-20:])
            raise build_error(exc.docker_command, exc.return_code, err) from None
        if metadata.exists():
            output.metadata = json.loads(metadata.read_text(encoding="utf-8") or "{}")
    return output


def build_error(argv: Sequence[str], returncode: int | None, stderr: str) -> EngineError:
    """A failed build, with the fix when the cause is a known one."""
    text = stderr.lower()
    hint = ""
    message = "docker buildx build failed"
    if is_unreachable(stderr):
        return EngineError(
            "the Docker daemon is unreachable",
            argv=argv,
            returncode=returncode,
            hint=UNREACHABLE_HINT,
        )
    if "no match for platform in manifest" in text or "exec format error" in text:
        hint = "the base image or the builder lacks that platform: drop it from --platform"
    elif "multiple platforms feature is currently not supported" in text or (
        "docker exporter does not currently support exporting manifest lists" in text
    ):
        hint = "this builder cannot load several platforms: pass --push, or one --platform"
    elif "failed to read dockerfile" in text or "failed to solve: failed to read" in text:
        hint = "check --dockerfile / [tool.pipeline] dockerfile"
    elif "lock" in text and "needs to be updated" in text:
        hint = "run `uv lock` and commit uv.lock"
    return EngineError(message, argv=argv, returncode=returncode, stderr=stderr, hint=hint)


def cache_mount_ids(du_verbose: str, mount_id: str) -> list[str]:
    """Records of ``docker buildx du --verbose`` that are cache mounts whose id starts with
    ``mount_id`` (pure)."""
    ids: list[str] = []
    record = ""
    for line in du_verbose.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "ID":
            record = value.strip()
        elif key.strip() == "Description" and record:
            if value.strip().startswith("cached mount") and f'with id "/{mount_id}' in value:
                ids.append(record)
            record = ""
    return ids


def prune_cache_mounts(mount_id: str, client: DockerClient | None = None) -> int:
    """Delete the builder's cache mounts whose id starts with ``mount_id`` (and only those:
    other people's caches stay). Returns how many."""
    client = client or docker()
    base = [*client.client_config.docker_cmd, "buildx"]
    text = run_cli([*base, "du", "--verbose"], "cannot list the build cache")
    ids = cache_mount_ids(text, mount_id)
    for record in ids:
        run_cli([*base, "prune", "--force", "--filter", f"id={record}"], "cannot prune")
    return len(ids)
