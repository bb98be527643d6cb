"""pipeline.project: pyproject.toml as Invoke's first layer, parsed once and kept like bytecode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.project import cache_path, invoke_defaults, load_pyproject

PROJECT = '[project]\nname = "gw"\n\n[tool.pipeline]\nimage = "ghcr.io/acme/gw"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_missing_pyproject_is_an_empty_project(tmp_path: Path) -> None:
    assert load_pyproject(tmp_path / "pyproject.toml", write_cache=True) == {}
    assert not (tmp_path / "__pycache__").exists()


def test_the_parsed_file_is_kept_beside_it_and_used_while_its_bytes_are_the_same(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, PROJECT)
    expected = {"project": {"name": "gw"}, "tool": {"pipeline": {"image": "ghcr.io/acme/gw"}}}
    assert load_pyproject(path, write_cache=True) == expected
    cache = cache_path(path)
    assert cache == tmp_path / "__pycache__" / "pyproject.toml.json"
    entry = json.loads(cache.read_text())
    assert entry["data"] == expected
    entry["data"] = {"from": "the cache"}  # proves the next read does not parse the TOML
    cache.write_text(json.dumps(entry))
    assert load_pyproject(path) == {"from": "the cache"}


def test_an_edit_of_the_same_size_is_parsed_again(tmp_path: Path) -> None:
    path = write(tmp_path, PROJECT)
    load_pyproject(path, write_cache=True)
    write(tmp_path, PROJECT.replace("gw", "gx"))
    assert load_pyproject(path, write_cache=True)["project"] == {"name": "gx"}
    assert json.loads(cache_path(path).read_text())["data"]["project"] == {"name": "gx"}


def test_without_write_cache_nothing_is_written(tmp_path: Path) -> None:
    path = write(tmp_path, PROJECT)
    assert load_pyproject(path)["project"] == {"name": "gw"}
    assert not (tmp_path / "__pycache__").exists()


@pytest.mark.parametrize("garbage", ["", "{not json", '{"key": 1}', "[]"])
def test_a_damaged_cache_is_ignored_and_rewritten(tmp_path: Path, garbage: str) -> None:
    path = write(tmp_path, PROJECT)
    cache_path(path).parent.mkdir()
    cache_path(path).write_text(garbage)
    assert load_pyproject(path, write_cache=True)["project"] == {"name": "gw"}
    assert json.loads(cache_path(path).read_text())["data"]["project"] == {"name": "gw"}


def test_a_cache_that_cannot_be_written_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, PROJECT)
    (tmp_path / "__pycache__").write_text("a file where the folder would go")
    assert load_pyproject(path, write_cache=True)["project"] == {"name": "gw"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["__pycache__", "pyproject.toml"]


def test_values_json_cannot_hold_leave_no_cache(tmp_path: Path) -> None:
    path = write(tmp_path, "[tool.pipeline]\nsince = 2026-11-30\n")
    assert str(load_pyproject(path, write_cache=True)["tool"]["pipeline"]["since"]) == "2026-11-30"
    assert not cache_path(path).exists()


@pytest.mark.parametrize("raw", [b"[tool.pipeline\n", b'name = "\xff"\n'])
def test_a_file_that_is_not_toml_is_a_config_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match="invalid TOML") as caught:
        load_pyproject(path, write_cache=True)
    assert caught.value.hint == "fix the file"
    assert not cache_path(path).exists()


def test_invoke_defaults_carry_the_project_metadata_and_platforms_as_one_string() -> None:
    pyproject = {
        "project": {"name": "gw", "description": "a gateway", "license": {"text": "MIT"}},
        "tool": {"pipeline": {"platforms": ["linux/amd64", "linux/arm64"], "title": "Gateway"}},
    }
    assert invoke_defaults(pyproject) == {
        "platforms": "linux/amd64,linux/arm64",
        "title": "Gateway",
        "description": "a gateway",
        "licenses": "MIT",
    }
