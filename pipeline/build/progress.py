"""Reading buildx's plain progress: steps, cached steps, context size (pure)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

_UNITS = {"B": 1, "kB": 1000, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20, "GB": 10**9}

_STEP = re.compile(r"^#(\d+) \[([^\]]+)\] (.*)$")

_TRANSFER = re.compile(r"transferring context: ([\d.]+)\s*([kKMG]i?B|B)")


@dataclass
class Progress:
    """What the plain progress output says: steps, cached steps, context bytes sent."""

    steps: dict[str, str] = field(default_factory=dict)
    cached: set[str] = field(default_factory=set)
    context_bytes: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return len(self.steps)

    @property
    def cached_steps(self) -> int:
        return len(self.cached & set(self.steps))


def read_progress(lines: Iterable[str]) -> Progress:
    """Dockerfile steps are vertices named ``[stage n/m] ...`` (not ``[internal]`` ones, and
    not ``FROM``, which is resolved rather than run or cached); a cached one prints
    ``#N CACHED``; the build context vertex prints its transfer size."""
    progress = Progress()
    internal: dict[str, str] = {}
    for raw in lines:
        line = raw.rstrip()
        match = _STEP.match(line)
        if match:
            vertex, where, what = match.groups()
            if where == "internal":
                internal[vertex] = what
            elif re.search(r"\b\d+/\d+$", where) and not what.startswith("FROM "):
                progress.steps.setdefault(vertex, f"[{where}] {what}")
            continue
        vertex, _, rest = line.removeprefix("#").partition(" ")
        if rest == "CACHED":
            progress.cached.add(vertex)
        elif rest.startswith("ERROR") or line.startswith("ERROR"):
            progress.errors.append(line)
        if internal.get(vertex) == "load build context":
            size = _TRANSFER.search(rest)
            if size:
                progress.context_bytes = int(float(size[1]) * _UNITS[size[2]])
    return progress


def display(progress: str) -> Callable[[str], None] | None:
    """How build output reaches the terminal: every line (plain), step names (auto/tty),
    nothing (quiet)."""
    if progress == "quiet":
        return None
    if progress == "plain":
        return lambda line: print(line, flush=True)
    seen: set[str] = set()

    def show(line: str) -> None:
        match = _STEP.match(line)
        if match and match[2] != "internal" and match[1] not in seen:
            seen.add(match[1])
            print(f"  {match[2]} {match[3][:100]}", flush=True)
        elif line.startswith("ERROR") or " ERROR" in line[:12]:
            print(line, flush=True)

    return show
