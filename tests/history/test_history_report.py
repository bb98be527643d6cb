"""Build history and reports: one JSON line per build or publish, a Markdown summary and charts
of the last N builds."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.build.record import BuildRecord
from pipeline.errors import UsageError
from pipeline.history.report import (
    HistoryEntry,
    append_history,
    entry_from_record,
    human_duration,
    human_size,
    parse_history,
    read_history,
    render_charts,
    render_markdown,
    step_series,
    write_report,
)
from tests.conftest import ROOT

AMD, ARM = "linux/amd64", "linux/arm64"


def entry(n: int, result: str = "success", **kw: object) -> HistoryEntry:
    data: dict[str, object] = {
        "result": result,
        "when": f"2026-11-{n:02d}T10:00:00Z",
        "commit": f"{n:02d}" + "a" * 38,
        "tags": ("edge", f"sha-{n:02d}aaaaa"),
        "steps": {"build": 60.0 + n, "test": 10.0, "scan": 5.0},
        "cached_steps": n % 4,
        "total_steps": 12,
        "sizes": {AMD: 50 * 2**20 + n * 2**18, ARM: 48 * 2**20},
        "scan": {"CRITICAL": 0, "HIGH": 2, "MEDIUM": 1, "LOW": 7},
    }
    data.update(kw)
    return HistoryEntry(**data)  # type: ignore[arg-type]


def test_each_append_adds_exactly_one_json_line_that_reads_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "build" / "history.jsonl"
    first, second = entry(1), entry(2, "failure", error="scan gate: 1 CRITICAL")
    append_history(path, first)
    append_history(path, second)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1])["result"] == "failure"
    assert read_history(path).entries == (first, second)


def test_the_steps_keep_the_order_they_ran_in(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    append_history(path, entry(1, steps={"zeta": 1.0, "alpha": 2.0, "mid": 3.0}))
    assert list(read_history(path).entries[0].steps) == ["zeta", "alpha", "mid"]


def test_a_torn_or_foreign_line_is_skipped_and_counted_not_fatal() -> None:
    good = json.dumps(entry(1).to_json())
    history = parse_history([good, '{"result": "succ', "[1, 2]", "", good])
    assert len(history.entries) == 2
    assert history.skipped == (2, 3)


def test_a_missing_history_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no build history at .*history\.jsonl"):
        read_history(tmp_path / "history.jsonl")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"result": "ok"}, "result 'ok' is not success or failure"),
        ({"kind": "deploy"}, "kind 'deploy' is not build or publish"),
    ],
)
def test_an_entry_with_an_unknown_result_or_kind_is_refused(
    kw: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        HistoryEntry(**{"result": "success", **kw})


def test_the_last_n_are_the_newest_and_n_must_be_positive() -> None:
    history = parse_history([json.dumps(entry(n).to_json()) for n in range(1, 6)])
    assert [e.when[8:10] for e in history.last(2)] == ["04", "05"]
    assert len(history.last(50)) == 5
    with pytest.raises(UsageError, match="--last 0: must be at least 1"):
        history.last(0)


def test_an_entry_made_from_a_build_record_carries_its_figures() -> None:
    record = BuildRecord(
        image="ghcr.io/acme/api-gateway",
        version="1.2.3",
        tags=["1.2.3", "1.2", "sha-abc1234"],
        platforms=[AMD, ARM],
        revision="abc1234" + "0" * 33,
        ref="refs/tags/v1.2.3",
        duration_s=95.5,
        cached_steps=7,
        total_steps=11,
        sizes={AMD: 1000, ARM: 900},
        built_at="2026-11-29T17:00:00Z",
    )
    made = entry_from_record(record, result="success", scan={"CRITICAL": 0, "HIGH": 1})
    assert made == HistoryEntry(
        result="success",
        kind="build",
        when="2026-11-29T17:00:00Z",
        commit="abc1234" + "0" * 33,
        ref="refs/tags/v1.2.3",
        image="ghcr.io/acme/api-gateway",
        version="1.2.3",
        tags=("1.2.3", "1.2", "sha-abc1234"),
        steps={"build": 95.5},
        cached_steps=7,
        total_steps=11,
        sizes={AMD: 1000, ARM: 900},
        scan={"CRITICAL": 0, "HIGH": 1},
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.42, "0.4s"), (9.94, "9.9s"), (42.4, "42s"), (61, "1m 01s"), (3725, "1h 02m")],
)
def test_durations_read_like_a_person_writes_them(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"), [(512, "512 B"), (1536, "1.5 KiB"), (52 * 2**20, "52.0 MiB")]
)
def test_sizes_are_binary_units(size: int, text: str) -> None:
    assert human_size(size) == text


def test_the_markdown_summary_has_headline_figures_and_one_row_per_build_newest_first() -> None:
    entries = [entry(1), entry(2, "failure", error="tests failed"), entry(3, scan=None)]
    text = render_markdown(entries, skipped=(7,), charts=[("build time", "build-time.svg")])
    assert text.splitlines()[:6] == [
        "## Build report: last 3 entries",
        "",
        "- **2/3 succeeded**; median successful duration 1m 17s",
        "- Latest: ✅ build of `03aaaaa` on 2026-11-03 10:00 UTC",
        "- 1 unreadable history line(s) skipped (line 7)",
        "",
    ]
    table = [line for line in text.splitlines() if line.startswith("| 2026-")]
    assert table == [
        "| 2026-11-03 10:00 | build | `03aaaaa` | `edge`, `sha-03aaaaa` | 1m 18s | 3/12"
        " | 50.8 MiB | 48.0 MiB | not scanned | ✅ success |",
        "| 2026-11-02 10:00 | build | `02aaaaa` | `edge`, `sha-02aaaaa` | 1m 17s | 2/12"
        " | 50.5 MiB | 48.0 MiB | 0/2/1/7 | ❌ failure |",
        "| 2026-11-01 10:00 | build | `01aaaaa` | `edge`, `sha-01aaaaa` | 1m 16s | 1/12"
        " | 50.2 MiB | 48.0 MiB | 0/2/1/7 | ✅ success |",
    ]
    assert "| Size amd64 | Size arm64 | Scan C/H/M/L | Result |" in text
    assert text.endswith("### Charts\n\n![build time](build-time.svg)\n")


def test_an_empty_history_says_so() -> None:
    assert render_markdown([]) == "## Build report\n\nNo builds recorded yet.\n"


def test_the_chart_stacks_the_slowest_steps_and_sums_the_rest_as_other() -> None:
    steps = {"a": 50.0, "b": 40.0, "c": 30.0, "d": 20.0, "e": 2.0, "f": 1.0}
    series = step_series([entry(1, steps=steps), entry(2, steps={"a": 10.0})])
    assert series == {
        "a": [50.0, 10.0],
        "b": [40.0, 0.0],
        "c": [30.0, 0.0],
        "d": [20.0, 0.0],
        "other": [3.0, 0.0],
    }


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_the_report_writes_the_summary_and_svg_and_png_charts(tmp_path: Path) -> None:
    history = parse_history(
        [json.dumps(entry(n, "failure" if n == 4 else "success").to_json()) for n in range(1, 9)]
    )
    report = write_report(history, 6, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "build-time.png",
        "build-time.svg",
        "image-size.png",
        "image-size.svg",
        "summary.md",
    ]
    assert report.text == (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert report.text.startswith("## Build report: last 6 entries\n")
    build_svg = (tmp_path / "build-time.svg").read_text(encoding="utf-8")
    assert build_svg.lstrip().startswith("<?xml")
    # Text stays text (svg.fonttype none): titles, legend and commits are searchable.
    for expected in ("Build time per build", "build", "scan", "03aaaaa", "failed"):
        assert expected in build_svg
    size_svg = (tmp_path / "image-size.svg").read_text(encoding="utf-8")
    assert "amd64" in size_svg and "arm64" in size_svg
    width, height = _png_size(tmp_path / "build-time.png")
    assert width > 600 and height > 300


def test_the_charts_are_reproducible(tmp_path: Path) -> None:
    history = parse_history([json.dumps(entry(n).to_json()) for n in range(1, 4)])
    first = [p.read_bytes() for p in render_charts(history.entries, tmp_path) if p.suffix == ".svg"]
    again = [p.read_bytes() for p in render_charts(history.entries, tmp_path) if p.suffix == ".svg"]
    assert len(first) == 2
    assert first == again


def _invoke(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_invoke_report_writes_the_files_and_appends_to_the_step_summary(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    for n in range(1, 5):
        append_history(history, entry(n))
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n", encoding="utf-8")
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    env.pop("NOTIFY_WEBHOOK_URL", None)
    out = tmp_path / "report"
    done = _invoke("report", "--last", "3", "--history", str(history), "--out", str(out), env=env)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        f"report: {out / 'summary.md'}",
        *(f"chart: {out / n}" for n in ("build-time.svg", "build-time.png")),
        *(f"chart: {out / n}" for n in ("image-size.svg", "image-size.png")),
    ]
    step_summary = summary.read_text(encoding="utf-8")
    assert step_summary.startswith("# earlier step\n## Build report: last 3 entries\n")
    assert "![" not in step_summary  # no links to files the summary cannot show
    assert step_summary.endswith("Charts: build-time.svg, image-size.svg (in build/report/)\n")


def test_invoke_report_notify_without_a_webhook_fails_before_writing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_WEBHOOK_URL"}
    done = _invoke("report", "--notify", "--out", str(tmp_path / "out"), env=env)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --notify: NOTIFY_WEBHOOK_URL is not set"
    assert not (tmp_path / "out").exists()
