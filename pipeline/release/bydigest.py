"""``docker.push --by-digest``: the image a job built, tested and scanned, uploaded from the
local store by digest only (no tag), for ``docker.merge`` to join with the other platforms'.

The per-platform workflow builds, tests and scans with nothing pushed, then pushes that very
image: no rebuild, so what reaches the registry is byte for byte what was checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.build.plan import DIGESTS_DIR, write_digest_file
from pipeline.build.record import BuildRecord
from pipeline.build.run import upload_from_store
from pipeline.config import Settings
from pipeline.errors import UsageError


def check_pushable(record: BuildRecord) -> str:
    """The one platform of a record loaded into the local store (pure): a push by digest
    is per platform, and only a loaded image is in the store."""
    if len(record.platforms) != 1:
        raise UsageError(
            f"--by-digest pushes one platform; the build record has {len(record.platforms)}"
            f" ({', '.join(record.platforms) or 'none'})",
            hint="build each platform on its own: invoke docker.build --platform OS/ARCH",
        )
    if not record.loaded:
        raise UsageError(
            f"--by-digest pushes the image in the local store; {record.reference} was not loaded",
            hint="build it with invoke docker.build --load (the default for one platform)",
        )
    return record.platforms[0]


def push_by_digest(
    record_path: Path, digests_dir: Path, *, settings: Settings, environ: Mapping[str, str]
) -> list[str]:
    """Upload the record's local image by digest; write ``digests_dir/<os>-<arch>`` for
    ``docker.merge``; the lines to print."""
    record = BuildRecord.read(record_path)
    platform = check_pushable(record)
    digest = upload_from_store(record.reference, record.image, settings, environ)
    written = write_digest_file(digests_dir, platform, digest)
    return [f"digest={digest}", f"platforms={platform}", f"digest_file={written}"]


@dataclass(frozen=True)
class PushRequest:
    """The flags of ``docker.push``."""

    record: str | None = None
    by_digest: bool = False
    digests_dir: str = ""


def push_task(
    request: PushRequest, *, root: Path, settings: Settings, environ: Mapping[str, str]
) -> list[str]:
    """``docker.push``: every tag as one index (``pipeline.release.push``), or with
    ``by_digest`` the tested one-platform image by digest; the lines to print."""
    from pipeline.release.push import push_lines

    path = root / (request.record or settings.record)
    if request.by_digest:
        out = root / (request.digests_dir or DIGESTS_DIR)
        return push_by_digest(path, out, settings=settings, environ=environ)
    return push_lines(path, settings=settings, environ=environ)
