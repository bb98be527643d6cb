"""Build history and reports.

Every build and publish appends one JSON line to the history file (``build/history.jsonl`` by
default): when, commit, tags, duration per step, cached steps, image size per platform, scan
counts and the result. ``render_markdown`` summarises the last N entries and ``render_charts``
draws build time and image size over them (matplotlib, Agg backend; SVG, and PNG to look at).
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.clock import utc_stamp
from pipeline.errors import UsageError

RESULTS = ("success", "failure")
KINDS = ("build", "publish")
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")


@dataclass(frozen=True)
class HistoryEntry:
    """One build or publish. ``steps`` maps a step name to its duration in seconds (in the
    order they ran); ``sizes`` maps a platform to its compressed image size in bytes;
    ``scan`` maps a severity to a finding count (absent: not scanned, which is not clean)."""

    result: str
    kind: str = "build"
    when: str = field(default_factory=utc_stamp)
    commit: str = ""
    ref: str = ""
    image: str = ""
    version: str = ""
    tags: tuple[str, ...] = ()
    steps: Mapping[str, float] = field(default_factory=dict)
    cached_steps: int = 0
    total_steps: int = 0
    sizes: Mapping[str, int] = field(default_factory=dict)
    scan: Mapping[str, int] | None = None
    error: str = ""

    def __post_init__(self) -> None:
        if self.result not in RESULTS:
            raise UsageError(f"history entry: result {self.result!r} is not success or failure")
        if self.kind not in KINDS:
            raise UsageError(f"history entry: kind {self.kind!r} is not build or publish")

    @property
    def duration_s(self) -> float:
        return float(sum(self.steps.values()))

    @property
    def ok(self) -> bool:
        return self.result == "success"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = list(self.tags)
        data["steps"] = dict(self.steps)
        data["sizes"] = dict(self.sizes)
        data["scan"] = dict(self.scan) if self.scan is not None else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HistoryEntry:
        scan = data.get("scan")
        return cls(
            result=str(data["result"]),
            kind=str(data.get("kind", "build")),
            when=str(data["when"]),
            commit=str(data.get("commit", "")),
            ref=str(data.get("ref", "")),
            image=str(data.get("image", "")),
            version=str(data.get("version", "")),
            tags=tuple(str(t) for t in data.get("tags", ())),
            steps={str(k): float(v) for k, v in dict(data.get("steps", {})).items()},
            cached_steps=int(data.get("cached_steps", 0)),
            total_steps=int(data.get("total_steps", 0)),
            sizes={str(k): int(v) for k, v in dict(data.get("sizes", {})).items()},
            scan={str(k): int(v) for k, v in dict(scan).items()} if scan is not None else None,
            error=str(data.get("error", "")),
        )


def entry_from_record(
    record: Any,
    *,
    result: str,
    kind: str = "build",
    steps: Mapping[str, float] | None = None,
    scan: Mapping[str, int] | None = None,
    error: str = "",
    when: str | None = None,
) -> HistoryEntry:
    """A history entry from a ``pipeline.build.record.BuildRecord`` (duck-typed to keep this module
    free of the record's imports). Without ``steps``, the record's total duration is one step
    named after ``kind``."""
    if steps is None:
        steps = {kind: float(record.duration_s)} if record.duration_s else {}
    return HistoryEntry(
        result=result,
        kind=kind,
        when=when or record.built_at or utc_stamp(),
        commit=record.revision,
        ref=record.ref,
        image=record.image,
        version=record.version,
        tags=tuple(record.tags),
        steps=dict(steps),
        cached_steps=int(record.cached_steps),
        total_steps=int(record.total_steps),
        sizes=dict(record.sizes),
        scan=dict(scan) if scan is not None else None,
        error=error,
    )


def append_history(path: Path, entry: HistoryEntry) -> None:
    """Append one JSON line. A single ``write`` on an ``O_APPEND`` file: concurrent appends
    do not interleave, and a killed process leaves at worst one partial last line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(entry.to_json(), separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


@dataclass(frozen=True)
class History:
    entries: tuple[HistoryEntry, ...]
    skipped: tuple[int, ...] = ()  # line numbers that could not be read

    def last(self, count: int) -> tuple[HistoryEntry, ...]:
        if count < 1:
            raise UsageError(f"--last {count}: must be at least 1")
        return self.entries[-count:]


def parse_history(lines: Iterable[str]) -> History:
    """Entries in file order; unreadable lines are skipped and their numbers kept, so one
    torn line does not hide the rest of the history."""
    entries: list[HistoryEntry] = []
    skipped: list[int] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            entries.append(HistoryEntry.from_json(data))
        except (ValueError, KeyError, TypeError, UsageError):
            skipped.append(number)
    return History(tuple(entries), tuple(skipped))


def read_history(path: Path) -> History:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"no build history at {path}",
            hint="run `invoke docker.build` (every build and publish appends to it)",
        ) from None
    return parse_history(text.splitlines())


# --- Markdown ---


def human_duration(seconds: float) -> str:
    total = round(seconds)
    if total < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


def short_platform(platform: str) -> str:
    """``linux/amd64`` -> ``amd64``; ``linux/arm/v7`` -> ``arm/v7``."""
    return platform.split("/", 1)[1] if platform.startswith("linux/") else platform


def short_when(when: str) -> str:
    """``2026-11-29T17:04:05Z`` -> ``2026-11-29 17:04``."""
    return when.replace("T", " ")[:16]


def scan_cell(scan: Mapping[str, int] | None) -> str:
    if scan is None:
        return "not scanned"
    return "/".join(str(scan.get(s, 0)) for s in SEVERITIES[:4])


def _tags_cell(tags: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(f"`{t}`" for t in tags[:limit])
    return shown + (f" +{len(tags) - limit}" if len(tags) > limit else "") if tags else "-"


def render_markdown(
    entries: Sequence[HistoryEntry],
    *,
    skipped: Sequence[int] = (),
    charts: Sequence[tuple[str, str]] = (),
) -> str:
    """The summary: headline figures, one table row per entry (newest first), the latest
    entry's steps, and ``charts`` (alt text, relative path) as images when given."""
    if not entries:
        return "## Build report\n\nNo builds recorded yet.\n"
    latest = entries[-1]
    passed = sum(1 for e in entries if e.ok)
    durations = [e.duration_s for e in entries if e.ok and e.duration_s > 0]
    platforms = sorted({p for e in entries for p in e.sizes})
    mark = {"success": "✅", "failure": "❌"}
    lines = [
        f"## Build report: last {len(entries)} {'entry' if len(entries) == 1 else 'entries'}",
        "",
        f"- **{passed}/{len(entries)} succeeded**"
        + (
            f"; median successful duration {human_duration(statistics.median(durations))}"
            if durations
            else ""
        ),
        f"- Latest: {mark[latest.result]} {latest.kind} of `{latest.commit[:7] or '?'}`"
        f" on {short_when(latest.when)} UTC"
        + (f" ({latest.version})" if latest.version else "")
        + (f": {latest.error}" if latest.error else ""),
    ]
    if skipped:
        lines.append(
            f"- {len(skipped)} unreadable history line(s) skipped"
            f" (line {', '.join(str(n) for n in skipped[:5])})"
        )
    header = ["When (UTC)", "Kind", "Commit", "Tags", "Duration", "Cached"]
    header += [f"Size {short_platform(p)}" for p in platforms]
    header += ["Scan C/H/M/L", "Result"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in reversed(entries):
        cached = f"{e.cached_steps}/{e.total_steps}" if e.total_steps else "-"
        row = [
            short_when(e.when),
            e.kind,
            f"`{e.commit[:7]}`" if e.commit else "-",
            _tags_cell(e.tags),
            human_duration(e.duration_s) if e.steps else "-",
            cached,
        ]
        row += [human_size(e.sizes[p]) if p in e.sizes else "-" for p in platforms]
        row += [scan_cell(e.scan), f"{mark[e.result]} {e.result}"]
        lines.append("| " + " | ".join(row) + " |")
    if latest.steps:
        lines += ["", f"### Steps of the latest {latest.kind}", "", "| Step | Duration |"]
        lines.append("|---|---|")
        lines += [f"| {name} | {human_duration(s)} |" for name, s in latest.steps.items()]
    if charts:
        lines += ["", "### Charts", ""]
        lines += [f"![{alt}]({path})" for alt, path in charts]
    return "\n".join(lines) + "\n"


# --- charts ---

MAX_STEP_SERIES = 5


def step_series(entries: Sequence[HistoryEntry]) -> dict[str, list[float]]:
    """Seconds per step per entry, for a stacked bar chart: the slowest steps overall by name,
    the rest summed as ``other``."""
    totals: dict[str, float] = {}
    for e in entries:
        for name, seconds in e.steps.items():
            totals[name] = totals.get(name, 0.0) + seconds
    named = sorted(totals, key=lambda n: -totals[n])[:MAX_STEP_SERIES]
    if len(totals) > MAX_STEP_SERIES:
        named = named[: MAX_STEP_SERIES - 1]
    series = {name: [float(e.steps.get(name, 0.0)) for e in entries] for name in named}
    rest = [e.duration_s - sum(e.steps.get(n, 0.0) for n in named) for e in entries]
    if any(r > 0.05 for r in rest):
        series["other"] = [max(r, 0.0) for r in rest]
    return series


def x_labels(entries: Sequence[HistoryEntry]) -> list[str]:
    return [f"{e.commit[:7] or '?'}\n{e.when[5:10]}" for e in entries]


def render_charts(entries: Sequence[HistoryEntry], out_dir: Path) -> list[Path]:
    """``build-time`` and ``image-size`` charts as SVG and PNG in ``out_dir``; returns the
    paths written. Deterministic output (no dates or random ids in the SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with plt.rc_context({"svg.hashsalt": "api-gateway-report", "svg.fonttype": "none"}):
        for name, draw in (("build-time", _build_time_chart), ("image-size", _size_chart)):
            fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(entries) + 2), 4))
            draw(ax, entries)
            ax.set_xticks(list(range(len(entries))), x_labels(entries), fontsize=7)
            fig.tight_layout()
            written += _save(fig, out_dir / name)
            plt.close(fig)
    return written


def _build_time_chart(ax: Any, entries: Sequence[HistoryEntry]) -> None:
    bottoms = [0.0] * len(entries)
    for name, values in step_series(entries).items():
        ax.bar(list(range(len(entries))), values, bottom=bottoms, label=name, width=0.7)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    for x, e in enumerate(entries):
        if not e.ok:
            ax.annotate(
                "failed",
                (x, bottoms[x]),
                ha="center",
                va="bottom",
                color="#b00020",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_title("Build time per build (stacked by step)")
    ax.set_ylabel("seconds")
    ax.set_ylim(0, max([*bottoms, 1.0]) * 1.15)
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", ncols=3)


def _size_chart(ax: Any, entries: Sequence[HistoryEntry]) -> None:
    platforms = sorted({p for e in entries for p in e.sizes})
    for platform in platforms:
        xs = [x for x, e in enumerate(entries) if platform in e.sizes]
        ys = [entries[x].sizes[platform] / 2**20 for x in xs]
        ax.plot(xs, ys, marker="o", label=short_platform(platform))
    ax.set_title("Image size per platform (compressed)")
    ax.set_ylabel("MiB")
    top = max((s for e in entries for s in e.sizes.values()), default=2**20) / 2**20
    ax.set_ylim(0, top * 1.15)
    ax.grid(alpha=0.3)
    if platforms:
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no sizes recorded", ha="center", transform=ax.transAxes)


def _save(fig: Any, stem: Path) -> list[Path]:
    svg, png = stem.with_suffix(".svg"), stem.with_suffix(".png")
    fig.savefig(svg, format="svg", metadata={"Date": None})
    fig.savefig(png, format="png", dpi=110)
    return [svg, png]


@dataclass(frozen=True)
class Report:
    markdown: Path
    charts: tuple[Path, ...]
    text: str


def write_report(history: History, last: int, out_dir: Path) -> Report:
    """Charts and ``summary.md`` (linking the SVG charts) in ``out_dir``."""
    entries = history.last(last)
    charts = tuple(render_charts(entries, out_dir)) if entries else ()
    svgs = [(p.stem.replace("-", " "), p.name) for p in charts if p.suffix == ".svg"]
    text = render_markdown(entries, skipped=history.skipped, charts=svgs)
    path = out_dir / "summary.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return Report(markdown=path, charts=charts, text=text)
