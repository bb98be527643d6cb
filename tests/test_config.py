"""[tool.pipeline] is loaded for Invoke and validated into typed settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.project import invoke_defaults, load_pyproject

ROOT = Path(__file__).resolve().parent.parent


def test_the_projects_own_settings_load_and_validate() -> None:
    defaults = invoke_defaults(load_pyproject(ROOT / "pyproject.toml"))
    settings = Settings.from_mapping(defaults)
    assert settings.image and settings.platforms


def test_platforms_may_come_as_a_comma_string_from_an_invoke_variable() -> None:
    settings = Settings.from_mapping({"platforms": "linux/amd64, linux/arm64/v8"})
    assert settings.platforms == ("linux/amd64", "linux/arm64/v8")


def test_string_booleans_from_variables_are_read_as_meant() -> None:
    settings = Settings.from_mapping({"tags": {"prefix_v": "false", "major": "1"}})
    assert (settings.tags.prefix_v, settings.tags.major) == (False, True)


def test_unknown_keys_are_kept_for_other_modules() -> None:
    assert Settings.from_mapping({"history": "build/history.jsonl"}).extra == {
        "history": "build/history.jsonl"
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"platforms": ["amd64"]}, "[tool.pipeline] platforms: 'amd64' is not OS/ARCH[/VARIANT]"),
        ({"image": ""}, "[tool.pipeline] image: must be a non-empty string"),
        ({"tags": {"latest": "always"}}, "[tool.pipeline.tags] latest: 'always' is not one of"),
        ({"tags": {"sha_length": 2}}, "[tool.pipeline.tags] sha_length: must be between 4 and 40"),
        ({"tags": {"sha_length": "x"}}, "[tool.pipeline.tags] sha_length: 'x' is not an integer"),
        ({"tags": {"colour": 1}}, "[tool.pipeline.tags] unknown key 'colour'"),
        ({"tags": {"major": "maybe"}}, "[tool.pipeline.tags] major: 'maybe' is not a boolean"),
    ],
)
def test_bad_settings_are_one_line_config_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping(data)
    assert caught.value.one_line().startswith(message)
    assert caught.value.exit_code == 2


# --- one loader, Invoke's layers, paths from the project root ---


def layered(tmp_path: Path, system: str = "") -> Settings:
    """What a task sees: Invoke's layers with ``system`` as the system file."""
    from pipeline.config import load_settings
    from tasks import project_config

    (tmp_path / "invoke.yaml").write_text(system)
    return load_settings(project_config(system_prefix=f"{tmp_path}/").docker, ROOT)


def test_the_system_config_file_overrides_pyproject(tmp_path: Path) -> None:
    settings = layered(tmp_path, "docker:\n  base_image: python:3.11-slim\n")
    assert settings.base_image == "python:3.11-slim"
    assert settings.image == "ghcr.io/acme/api-gateway"


def test_an_invoke_variable_overrides_the_system_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INVOKE_DOCKER_BASE_IMAGE", "mirror.example/python:3.11-slim")
    monkeypatch.setenv("INVOKE_DOCKER_PLATFORMS", "linux/arm64")
    settings = layered(tmp_path, "docker:\n  base_image: python:3.11-slim\n")
    assert settings.base_image == "mirror.example/python:3.11-slim"
    assert settings.platforms == ("linux/arm64",)


def test_flags_override_every_layer_and_unset_flags_change_nothing(tmp_path: Path) -> None:
    from pipeline.config import load_settings
    from tasks import project_config

    (tmp_path / "invoke.yaml").write_text("docker:\n  image: 127.0.0.1:5000/team/gw\n")
    docker = project_config(system_prefix=f"{tmp_path}/").docker
    assert load_settings(docker, ROOT, {"image": None}).image == "127.0.0.1:5000/team/gw"
    assert load_settings(docker, ROOT, {"image": "x.io/a/b"}).image == "x.io/a/b"


def test_paths_are_resolved_against_the_project_root_once_where_settings_load(
    tmp_path: Path,
) -> None:
    settings = layered(tmp_path)
    assert settings.root == ROOT
    assert settings.record == str(ROOT / "build/image.toml")
    assert settings.cache_dir == str(ROOT / "build/cache")
    assert settings.extra["history"] == str(ROOT / "build/history.jsonl")
    assert settings.extra["scan"]["output_dir"] == str(ROOT / "build/scan")
    assert settings.extra["scan"]["ignore_file"] == str(ROOT / ".scanignore.toml")
    assert settings.extra["scan"]["db_dir"] == ""
    assert (settings.dockerfile, settings.dockerfile_path) == (
        "docker/Dockerfile",
        ROOT / "docker/Dockerfile",
    )


def test_absolute_paths_stay_as_they_are(tmp_path: Path) -> None:
    settings = Settings.from_mapping({"record": str(tmp_path / "r.toml")}, root=ROOT)
    assert settings.record == str(tmp_path / "r.toml")
