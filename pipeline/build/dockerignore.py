"""The build context as ``.dockerignore`` leaves it: which files go, and their size."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from pathlib import Path

CONTEXT_LIMIT = 1_000_000


def read_dockerignore(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line)
    return patterns


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex on slash paths."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            if body.startswith("^"):
                body = "!" + body[1:]
            out.append("[^" + re.escape(body[1:]) + "]" if body.startswith("!") else "[")
            if not body.startswith("!"):
                out.append(re.escape(body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + "$")


def ignored(path: str, patterns: Sequence[str]) -> bool:
    """Whether ``path`` (relative, slash-separated) is left out of the context: the last
    matching pattern wins, ``!`` re-includes, a pattern matching a parent matches the path."""
    result = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = os.path.normpath(raw[1:] if negate else raw).lstrip("/")
        if pattern == ".":
            pattern = "*"
        regex = _pattern_regex(pattern)
        if any(regex.match(prefix) for prefix in prefixes):
            result = not negate
    return result


def context_files(root: Path, patterns: Sequence[str]) -> dict[str, int]:
    """Files the build context sends, with their sizes."""
    files: dict[str, int] = {}
    for directory, dirnames, filenames in os.walk(root):
        rel_dir = Path(directory).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        keep = []
        for name in dirnames:
            if not _dir_excluded(rel_dir + name, patterns):
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            rel = rel_dir + name
            if not ignored(rel, patterns):
                files[rel] = (Path(directory) / name).lstat().st_size
    return files


def _dir_excluded(rel: str, patterns: Sequence[str]) -> bool:
    """A directory can be skipped when it is ignored and no ``!`` pattern could reach inside."""
    if not ignored(rel, patterns):
        return False
    for raw in patterns:
        if raw.startswith("!"):
            inner = raw[1:].lstrip("/")
            if inner.startswith(rel + "/") or fnmatch.fnmatch(rel, inner.split("/")[0]):
                return False
    return True


def context_size(root: Path, ignore_file: Path | None = None) -> int:
    """Bytes of the build context after ``.dockerignore``."""
    patterns = read_dockerignore(ignore_file or root / ".dockerignore")
    return sum(context_files(root, patterns).values())
