"""The layer cache: ``--cache`` (a directory, ``registry:REF``, ``gha``, ``none``) as buildx's
``--cache-from``/``--cache-to``, and pruning an old local cache."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UsageError


@dataclass(frozen=True)
class CacheSpec:
    """``--cache-from`` entries and the ``--cache-to`` entry (None: no export)."""

    imports: tuple[dict[str, str], ...] = ()
    export: dict[str, str] | None = None
    kind: str = "none"


def cache_spec(
    value: str | None,
    *,
    cache_dir: Path,
    environ: Mapping[str, str],
    platforms: Sequence[str] = (),
) -> CacheSpec:
    """Where layers are cached between builds.

    default: GitHub's cache when its runtime variables are set (a job in Actions), else the
    local directory ``cache_dir``; ``gha`` or ``gha:SCOPE``; ``registry:REF``; ``local:DIR``
    or a path; ``none``. GitHub's cache has one scope per platform (``linux-amd64``), so
    per-platform jobs do not overwrite each other and a multi-platform build reads them all.
    """
    text = (value or "").strip()
    if not text:
        gha = environ.get("ACTIONS_RUNTIME_TOKEN") and environ.get("ACTIONS_CACHE_URL")
        text = "gha" if gha else f"local:{cache_dir}"
    if text in ("none", "off"):
        return CacheSpec()
    if text == "gha" or text.startswith("gha:"):
        scope = text.removeprefix("gha").removeprefix(":").strip()
        per_platform = [p.replace("/", "-") for p in platforms] or ["buildkit"]
        scopes = [scope] if scope else per_platform
        imports = tuple({"type": "gha", "scope": s} for s in scopes)
        export = {"type": "gha", "scope": "+".join(scopes), "mode": "max"}
        return CacheSpec(imports, export, "gha")
    if text.startswith("registry:"):
        ref = text.removeprefix("registry:").strip()
        if not ref or " " in ref:
            raise UsageError(f"--cache {text!r}: expected registry:HOST/REPO:TAG")
        return CacheSpec(
            ({"type": "registry", "ref": ref},),
            {"type": "registry", "ref": ref, "mode": "max"},
            "registry",
        )
    if text.startswith("type="):
        raise UsageError(
            f"--cache {text!r}: expected a directory, registry:REF, gha or none",
        )
    directory = Path(text.removeprefix("local:")).expanduser()
    if not str(directory):
        raise UsageError("--cache local: needs a directory")
    directory = directory.resolve()
    imports = (
        ({"type": "local", "src": str(directory)},) if (directory / "index.json").exists() else ()
    )
    return CacheSpec(imports, {"type": "local", "dest": str(directory), "mode": "max"}, "local")


def prune_local_cache(directory: Path, older_than: float) -> int:
    """BuildKit's local cache exporter rewrites ``index.json`` but never deletes a blob, so
    the directory grows with every build: delete the blobs the index no longer reaches (and
    only those written before ``older_than``, so a concurrent export keeps its own). Returns
    the bytes freed."""
    blobs = directory / "blobs" / "sha256"
    try:
        index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    reached: set[str] = set()
    pending = [str(m.get("digest", "")) for m in index.get("manifests") or []]
    while pending:
        digest = pending.pop()
        name = digest.removeprefix("sha256:")
        if not name or name in reached:
            continue
        reached.add(name)
        path = blobs / name
        if path.is_file() and path.stat().st_size < 4 * 1024 * 1024:
            with path.open("rb") as fh:
                if fh.read(1) != b"{":
                    continue  # a layer, not a manifest
            try:
                node = json.loads(path.read_bytes())
            except ValueError:
                continue
            if isinstance(node, dict):
                for key in ("manifests", "layers"):
                    pending += [str(d.get("digest", "")) for d in node.get(key) or []]
                if isinstance(node.get("config"), dict):
                    pending.append(str(node["config"].get("digest", "")))
    freed = 0
    for path in blobs.iterdir() if blobs.is_dir() else ():
        stat = path.stat()
        if path.name not in reached and stat.st_mtime < older_than:
            path.unlink()
            freed += stat.st_size
    return freed
