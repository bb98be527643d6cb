"""docker.build's history: one line per run, success (from the new record) or failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.build import run as build_run
from pipeline.build.plan import BuildOptions
from pipeline.build.record import BuildRecord
from pipeline.config import Settings
from pipeline.errors import EngineError
from pipeline.gitref import RefFlags
from pipeline.history import store as history
from pipeline.release.tags import image_tags
from tests import fixtures_image

ROOT = Path(__file__).resolve().parents[2]
SHA = "6f3e8fa" + "0" * 33


def project_settings(tmp_path: Path) -> Settings:
    return fixtures_image.project_settings(
        image="127.0.0.1:5000/test/history", record=str(tmp_path / "image.toml")
    )


def test_the_history_file_comes_from_settings_relative_to_the_root(tmp_path: Path) -> None:
    assert history.history_path(tmp_path, {}) == tmp_path / "build/history.jsonl"
    assert history.history_path(tmp_path, {"history": "h.jsonl"}) == tmp_path / "h.jsonl"
    assert project_settings(tmp_path).extra["history"] == str(ROOT / "build/history.jsonl")


def build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool) -> Path:
    settings = project_settings(tmp_path)
    context, tags = image_tags({}, ROOT, settings, RefFlags(ref="main", sha=SHA))

    def fake_run_build(**kwargs: Any) -> Any:
        if fail:
            raise EngineError("docker buildx build failed", hint="see the build output")
        record = BuildRecord(
            image=tags.image,
            version=tags.version,
            tags=list(tags.tag_names),
            platforms=["linux/amd64"],
            revision=context.sha,
            ref=context.ref,
            duration_s=42.5,
            cached_steps=7,
            total_steps=9,
            built_at="2026-11-29T18:00:00Z",
        )
        record.write(kwargs["record_path"])
        return type("Result", (), {"record": record})()

    monkeypatch.setattr(build_run, "run_build", fake_run_build)
    path = tmp_path / "history.jsonl"
    build_run.build_with_history(
        path,
        root=tmp_path,
        settings=settings,
        build_context=context,
        tags=tags,
        options=BuildOptions(),
        environ={},
        record_path=tmp_path / "image.toml",
    )
    return path


def test_a_build_appends_one_success_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = build_once(tmp_path, monkeypatch, fail=False)
    [line] = path.read_text().splitlines()
    entry = json.loads(line)
    assert (entry["result"], entry["kind"], entry["commit"], entry["version"]) == (
        "success",
        "build",
        SHA,
        "dev-main-6f3e8fa",
    )
    assert entry["steps"] == {"build": 42.5}
    assert (entry["cached_steps"], entry["total_steps"], entry["error"]) == (7, 9, "")


def test_a_failed_build_appends_one_failure_line_and_still_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(EngineError):
        build_once(tmp_path, monkeypatch, fail=True)
    [line] = (tmp_path / "history.jsonl").read_text().splitlines()
    entry = json.loads(line)
    assert (entry["result"], entry["kind"], entry["tags"]) == (
        "failure",
        "build",
        ["latest", "main-6f3e8fa"],
    )
    assert entry["error"] == "docker buildx build failed: see the build output"
    assert entry["steps"] == {}
