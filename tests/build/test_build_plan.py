"""The build plan: flags, settings and the environment become buildx arguments (pure), plus the
Dockerfile's lint and the build context's size."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.build.base import (
    BaseImage,
    base_name,
    dockerfile_base,
    mirror_reference,
    qualified_name,
)
from pipeline.build.cache import CacheSpec, cache_spec, prune_local_cache
from pipeline.build.dockerignore import context_files, context_size, ignored, read_dockerignore
from pipeline.build.plan import (
    BuildOptions,
    ca_secrets,
    choose_platforms,
    load_problem,
    parse_build_args,
    plan_build,
    platform_supported,
)
from pipeline.build.progress import read_progress
from pipeline.build.run import STAMP, cache_is_current, inputs_digest, preflight
from pipeline.config import Settings
from pipeline.errors import UsageError
from pipeline.oci.labels import ImageTags

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(image="ghcr.io/acme/api-gateway", platforms=("linux/amd64", "linux/arm64"))
PLATFORMS = ["linux/amd64", "linux/arm64"]
BASE = BaseImage("docker.io/library/python:3.11-slim", "sha256:" + "ab" * 32)
TAGS = ImageTags(
    image="ghcr.io/acme/api-gateway",
    version="1.2.3",
    tag_names=("v1.2.3", "1.2.3", "1.2", "1", "latest"),
    labels={"org.opencontainers.image.version": "1.2.3"},
    latest=True,
    immutable=("v1.2.3", "1.2.3"),
)


def plan(
    options: BuildOptions,
    environ: dict[str, str] | None = None,
    root: Path = ROOT,
    settings: Settings = SETTINGS,
) -> Any:
    return plan_build(
        root=root,
        settings=settings,
        tags=TAGS,
        options=options,
        environ=environ or {},
        host_platform="linux/amd64",
        base=BASE,
    )


# --- platforms ---


@pytest.mark.parametrize(
    ("requested", "environ", "expected"),
    [
        ((), {}, ("linux/amd64",)),
        ((), {"GITHUB_ACTIONS": "true"}, ("linux/amd64", "linux/arm64")),
        (("linux/arm64",), {"GITHUB_ACTIONS": "true"}, ("linux/arm64",)),
        (("linux/amd64", "linux/arm64"), {}, ("linux/amd64", "linux/arm64")),
        (("linux/amd64,linux/arm64", "linux/amd64"), {}, ("linux/amd64", "linux/arm64")),
        (("linux/arm/v7",), {}, ("linux/arm/v7",)),
    ],
)
def test_platforms_default_to_the_host_locally_and_to_the_settings_in_ci(
    requested: tuple[str, ...], environ: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert choose_platforms(requested, SETTINGS, environ, "linux/amd64") == expected


@pytest.mark.parametrize("bad", ["amd64", "linux/", "linux/arm/v7/x"])
def test_a_platform_that_is_not_os_arch_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match="is not OS/ARCH"):
        choose_platforms((bad,), SETTINGS, {}, "linux/amd64")


# --- cache ---


def test_the_default_cache_is_the_local_directory_exported_in_max_mode(tmp_path: Path) -> None:
    spec = cache_spec(None, cache_dir=tmp_path / "cache", environ={})
    assert spec == CacheSpec(
        (), {"type": "local", "dest": str(tmp_path / "cache"), "mode": "max"}, "local"
    )


def test_a_local_cache_that_exists_is_imported_too(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_text("{}")
    spec = cache_spec(f"local:{tmp_path}", cache_dir=Path("unused"), environ={})
    assert spec.imports == ({"type": "local", "src": str(tmp_path)},)
    assert spec.export == {"type": "local", "dest": str(tmp_path), "mode": "max"}


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        (
            None,
            {"ACTIONS_RUNTIME_TOKEN": "t", "ACTIONS_CACHE_URL": "https://cache/"},
            CacheSpec(
                ({"type": "gha", "scope": "linux-arm64"},),
                {"type": "gha", "scope": "linux-arm64", "mode": "max"},
                "gha",
            ),
        ),
        (
            "gha:pr-42",
            {},
            CacheSpec(
                ({"type": "gha", "scope": "pr-42"},),
                {"type": "gha", "scope": "pr-42", "mode": "max"},
                "gha",
            ),
        ),
        (
            "registry:127.0.0.1:5000/acme/gw:cache",
            {"ACTIONS_RUNTIME_TOKEN": "t", "ACTIONS_CACHE_URL": "https://cache/"},
            CacheSpec(
                ({"type": "registry", "ref": "127.0.0.1:5000/acme/gw:cache"},),
                {"type": "registry", "ref": "127.0.0.1:5000/acme/gw:cache", "mode": "max"},
                "registry",
            ),
        ),
        ("none", {}, CacheSpec()),
        ("off", {"ACTIONS_RUNTIME_TOKEN": "t", "ACTIONS_CACHE_URL": "u"}, CacheSpec()),
    ],
)
def test_cache_flags_become_cache_from_and_cache_to(
    value: str | None, environ: dict[str, str], expected: CacheSpec
) -> None:
    assert cache_spec(value, cache_dir=Path("/c"), environ=environ, platforms=["linux/arm64"]) == (
        expected
    )


def test_a_multi_platform_build_reads_every_platforms_gha_scope() -> None:
    spec = cache_spec("gha", cache_dir=Path("/c"), environ={}, platforms=PLATFORMS)
    assert spec.imports == (
        {"type": "gha", "scope": "linux-amd64"},
        {"type": "gha", "scope": "linux-arm64"},
    )
    assert spec.export == {"type": "gha", "scope": "linux-amd64+linux-arm64", "mode": "max"}


def test_the_gha_cache_needs_both_runtime_variables() -> None:
    spec = cache_spec(None, cache_dir=Path("/c"), environ={"ACTIONS_RUNTIME_TOKEN": "t"})
    assert spec.kind == "local"


@pytest.mark.parametrize("bad", ["registry:", "type=local,dest=/x"])
def test_a_malformed_cache_flag_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError):
        cache_spec(bad, cache_dir=Path("/c"), environ={})


# --- the CA bundle secret ---


def test_the_host_ca_bundle_becomes_a_buildkit_secret(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("pem")
    assert ca_secrets({"PIP_CERT": str(bundle)}) == (f"id=ca,src={bundle}",)
    assert ca_secrets({"SSL_CERT_FILE": str(bundle), "PIP_CERT": "/other"}) == (
        f"id=ca,src={bundle}",
    )
    assert ca_secrets({"REQUESTS_CA_BUNDLE": str(bundle)}) == (f"id=ca,src={bundle}",)
    assert ca_secrets({}) == ()
    assert ca_secrets({"SSL_CERT_FILE": ""}) == ()


def test_a_ca_variable_naming_no_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"SSL_CERT_FILE=.*no such file"):
        ca_secrets({"SSL_CERT_FILE": str(tmp_path / "missing.pem")})


# --- the whole plan ---


def test_a_local_build_loads_with_max_provenance_and_pins_the_base(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("pem")
    result = plan(
        BuildOptions(build_args=("A=1", "B=x=y"), cache="none", target="runtime"),
        {"SSL_CERT_FILE": str(bundle)},
    )
    assert result.buildx_options() == {
        "file": str(ROOT / "docker" / "Dockerfile"),
        "tags": [
            "ghcr.io/acme/api-gateway:v1.2.3",
            "ghcr.io/acme/api-gateway:1.2.3",
            "ghcr.io/acme/api-gateway:1.2",
            "ghcr.io/acme/api-gateway:1",
            "ghcr.io/acme/api-gateway:latest",
        ],
        "labels": {
            "org.opencontainers.image.version": "1.2.3",
            "org.opencontainers.image.base.name": "docker.io/library/python:3.11-slim",
            "org.opencontainers.image.base.digest": BASE.digest,
        },
        "platforms": ["linux/amd64"],
        "build_args": {
            "A": "1",
            "B": "x=y",
            "BASE_IMAGE": f"docker.io/library/python:3.11-slim@{BASE.digest}",
        },
        "push": False,
        "load": True,
        "provenance": {"mode": "max"},
        "sbom": False,
        "secrets": [f"id=ca,src={bundle}"],
        "cache": True,
        "target": "runtime",
    }
    assert result.context == ROOT


def test_the_commit_time_pins_the_image_timestamps_unless_given() -> None:
    pinned = plan_build(
        root=ROOT,
        settings=SETTINGS,
        tags=TAGS,
        options=BuildOptions(cache="none"),
        environ={},
        host_platform="linux/amd64",
        base=BASE,
        source_date_epoch=1795166130,
    )
    assert pinned.build_args["SOURCE_DATE_EPOCH"] == "1795166130"
    given = plan_build(
        root=ROOT,
        settings=SETTINGS,
        tags=TAGS,
        options=BuildOptions(cache="none", build_args=("SOURCE_DATE_EPOCH=5",)),
        environ={},
        host_platform="linux/amd64",
        base=BASE,
        source_date_epoch=1795166130,
    )
    assert given.build_args["SOURCE_DATE_EPOCH"] == "5"


def test_a_push_attaches_max_mode_provenance_and_does_not_load() -> None:
    options = plan(BuildOptions(push=True, cache="none")).buildx_options()
    assert (options["push"], options["load"], options["provenance"]) == (
        True,
        False,
        {"mode": "max"},
    )


@pytest.mark.parametrize(
    ("setting", "provenance"),
    [
        ("max", {"mode": "max"}),
        ("min", {"mode": "min"}),
        ("off", False),
        ("false", False),
        (False, False),
        ("MAX", {"mode": "max"}),
    ],
)
def test_the_provenance_setting_chooses_the_attestation(
    setting: object, provenance: object
) -> None:
    settings = Settings.from_mapping({"image": SETTINGS.image, "provenance": setting})
    result = plan(BuildOptions(cache="none"), settings=settings)
    assert result.buildx_options()["provenance"] == provenance


def test_an_unknown_provenance_setting_is_a_usage_error() -> None:
    settings = Settings.from_mapping({"image": SETTINGS.image, "provenance": "full"})
    with pytest.raises(UsageError, match=r"provenance: 'full' is not one of max, min, off"):
        plan(BuildOptions(cache="none"), settings=settings)


def test_push_and_load_together_do_both() -> None:
    options = plan(BuildOptions(push=True, load=True, cache="none")).buildx_options()
    assert (options["push"], options["load"]) == (True, True)


def test_builder_cache_and_no_cache_reach_buildx(tmp_path: Path) -> None:
    options = plan(
        BuildOptions(builder="k8s", cache="registry:r/x:cache", no_cache=True)
    ).buildx_options()
    assert options["builder"] == "k8s"
    assert options["cache"] is False
    assert options["cache_from"] == [{"type": "registry", "ref": "r/x:cache"}]
    assert options["cache_to"] == {"type": "registry", "ref": "r/x:cache", "mode": "max"}


def test_the_base_cannot_be_overridden_by_a_build_arg() -> None:
    with pytest.raises(UsageError, match="BASE_IMAGE"):
        plan(BuildOptions(build_args=("BASE_IMAGE=debian",)))


@pytest.mark.parametrize("bad", ["NOVALUE", "=x", "1A=x", "A B=c"])
def test_a_build_arg_must_be_key_equals_value(bad: str) -> None:
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_build_args([bad])


def test_an_unknown_progress_mode_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--progress 'fancy'"):
        plan(BuildOptions(progress="fancy"))


def test_a_missing_dockerfile_is_one_line_before_the_engine_is_asked(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        preflight(BuildOptions(), SETTINGS, tmp_path)
    assert caught.value.one_line() == (
        "no Dockerfile at docker/Dockerfile: create it, or set [tool.pipeline] dockerfile"
    )


# --- base names, platforms, loads ---


@pytest.mark.parametrize(
    ("name", "qualified", "via_mirror"),
    [
        (
            "python:3.11-slim",
            "docker.io/library/python:3.11-slim",
            "127.0.0.1:5000/library/python:3.11-slim",
        ),
        ("acme/base:1", "docker.io/acme/base:1", "127.0.0.1:5000/acme/base:1"),
        ("ghcr.io/acme/base:1", "ghcr.io/acme/base:1", "ghcr.io/acme/base:1"),
        ("localhost/base:1", "localhost/base:1", "localhost/base:1"),
        ("127.0.0.1:5000/b:1", "127.0.0.1:5000/b:1", "127.0.0.1:5000/b:1"),
    ],
)
def test_docker_hub_bases_resolve_through_the_daemons_mirror(
    name: str, qualified: str, via_mirror: str
) -> None:
    assert qualified_name(name) == qualified
    assert mirror_reference(name, ["http://127.0.0.1:5000/"]) == via_mirror
    assert mirror_reference(name, []) == qualified


@pytest.mark.parametrize(
    ("platform", "available", "supported"),
    [
        ("linux/amd64", ("linux/amd64", "linux/amd64/v2"), True),
        ("linux/arm64", ("linux/amd64", "linux/arm64"), True),
        ("linux/arm64", ("linux/amd64", "linux/arm64/v8"), True),
        ("linux/arm64/v8", ("linux/arm64",), True),
        ("linux/arm64", ("linux/amd64", "linux/amd64/v2"), False),
        ("linux/s390x", ("linux/amd64", "linux/arm64"), False),
    ],
)
def test_a_builder_builds_the_platforms_it_lists(
    platform: str, available: tuple[str, ...], supported: bool
) -> None:
    assert platform_supported(platform, available) is supported


@pytest.mark.parametrize(
    ("platforms", "driver", "containerd", "problem"),
    [
        (("linux/amd64",), "docker-container", False, None),
        (("linux/amd64", "linux/arm64"), "docker", True, None),
        (
            ("linux/amd64", "linux/arm64"),
            "docker",
            False,
            "builder b (the classic image store) cannot load 2 platforms into the local store",
        ),
        (
            ("linux/amd64", "linux/arm64"),
            "kubernetes",
            True,
            "builder b (the kubernetes driver) cannot load 2 platforms into the local store",
        ),
    ],
)
def test_loading_several_platforms_needs_the_containerd_store_and_the_docker_driver(
    platforms: tuple[str, ...], driver: str, containerd: bool, problem: str | None
) -> None:
    assert load_problem(platforms, driver, containerd, "b") == problem


# --- progress ---

PLAIN = """\
#0 building with "default" instance using docker driver
#1 [internal] load build definition from Dockerfile
#1 transferring dockerfile: 3.71kB done
#3 [internal] load .dockerignore
#3 transferring context: 299B 0.0s done
#4 [internal] load build context
#4 transferring context: 642.44kB 0.0s done
#5 [builder 1/8] FROM docker.io/library/python:3.11-slim@sha256:e6
#5 CACHED
#6 [builder 2/8] RUN pip install uv
#6 2.809 Collecting uv==0.13.9
#6 DONE 4.1s
#7 [linux/arm64 runtime 2/5] COPY --from=builder /etc/passwd /etc/
#7 CACHED
#6 [builder 2/8] RUN pip install uv
#8 exporting to image
#8 DONE 2.0s
"""


def test_plain_progress_gives_steps_cached_steps_and_context_bytes() -> None:
    progress = read_progress(PLAIN.splitlines())
    assert progress.total_steps == 2  # FROM is resolved, not a step
    assert progress.cached_steps == 1
    assert progress.context_bytes == 642_440
    assert progress.steps["6"] == "[builder 2/8] RUN pip install uv"


# --- the build context ---


@pytest.mark.parametrize(
    ("path", "patterns", "excluded"),
    [
        ("tests/test_x.py", ["*", "!gateway/"], True),
        ("gateway/server.py", ["*", "!gateway/"], False),
        ("gateway/__pycache__/a.pyc", ["*", "!gateway/", "**/__pycache__"], True),
        ("gateway/sub/x.pyc", ["*", "!gateway/", "**/*.py[co]"], True),
        ("uv.lock", ["*", "!uv.lock"], False),
        ("docs/a.md", ["docs"], True),
        ("docs/a.md", ["*.md"], False),
        ("a.md", ["*.md"], True),
        ("a/b/c.txt", ["a/**/c.txt"], True),
        ("build/cache/x", ["build/"], True),
        (".git/HEAD", [".git"], True),
        ("keep.txt", [], False),
    ],
)
def test_dockerignore_patterns(path: str, patterns: list[str], excluded: bool) -> None:
    assert ignored(path, patterns) is excluded


def test_the_build_context_is_the_gateway_and_the_lock_and_under_1_mb() -> None:
    files = context_files(ROOT, read_dockerignore(ROOT / ".dockerignore"))
    top = {name.split("/")[0] for name in files}
    assert top == {"pyproject.toml", "uv.lock", "README.md", "gateway"}
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]
    assert context_size(ROOT) < 1_000_000


# --- the Dockerfile ---


def test_hadolint_finds_nothing_at_warning_level_or_above() -> None:
    done = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "hadolint"),
            "--failure-threshold",
            "warning",
            str(ROOT / "docker" / "Dockerfile"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "")


DOCKER_HUB_PIN = (
    "python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7"
)


def test_the_dockerfile_has_no_syntax_line_and_takes_its_base_as_an_arg() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert "# syntax=" not in text
    assert "FROM --platform=$BUILDPLATFORM ${BASE_IMAGE} AS builder" in text
    assert "FROM ${BASE_IMAGE} AS runtime" in text


def test_the_dockerfile_pins_docker_hubs_base_in_a_from_line_that_dependabot_reads() -> None:
    """Dependabot reads FROM lines, never an ARG used in FROM (dependabot-core#4597): the pin
    stands in a stage of its own, which the BASE_IMAGE default names."""
    lines = (ROOT / "docker" / "Dockerfile").read_text().splitlines()
    pinned = [line for line in lines if "@sha256:" in line and not line.startswith("#")]
    assert pinned == [f"FROM {DOCKER_HUB_PIN} AS pinned-base"]
    assert lines.count("ARG BASE_IMAGE=pinned-base") == 1
    assert lines.index("ARG BASE_IMAGE=pinned-base") < lines.index(pinned[0])


# --- the local cache directory ---


def test_pruning_the_local_cache_keeps_what_the_index_reaches_and_new_blobs(
    tmp_path: Path,
) -> None:
    import json
    import os

    blobs = tmp_path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(name: str, content: bytes, age: float = 3600) -> None:
        (blobs / name).write_bytes(content)
        os.utime(blobs / name, (1_000_000 - age, 1_000_000 - age))

    cache_manifest = {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"digest": "sha256:layer1"}, {"digest": "sha256:layer2"}],
        "config": {"digest": "sha256:config"},
    }
    blob("manifest", json.dumps(cache_manifest).encode())
    blob("layer1", b"\x1f\x8b layer one")
    blob("layer2", b"\x1f\x8b layer two")
    blob("config", b'{"layers": []}')
    blob("stale", b"\x1f\x8b an old layer nobody reaches")
    blob("concurrent", b"\x1f\x8b written during this build", age=-10)
    (tmp_path / "index.json").write_text(json.dumps({"manifests": [{"digest": "sha256:manifest"}]}))
    freed = prune_local_cache(tmp_path, older_than=1_000_000)
    assert freed == len(b"\x1f\x8b an old layer nobody reaches")
    assert sorted(p.name for p in blobs.iterdir()) == [
        "concurrent",
        "config",
        "layer1",
        "layer2",
        "manifest",
    ]


def test_pruning_a_directory_without_an_index_deletes_nothing(tmp_path: Path) -> None:
    (tmp_path / "blobs" / "sha256").mkdir(parents=True)
    (tmp_path / "blobs" / "sha256" / "x").write_bytes(b"x")
    assert prune_local_cache(tmp_path, older_than=2e9) == 0
    assert (tmp_path / "blobs" / "sha256" / "x").exists()


def _tiny_project(root: Path) -> None:
    (root / "docker").mkdir()
    (root / "docker" / "Dockerfile").write_text("FROM scratch\n")
    (root / ".dockerignore").write_text("*\n!app/\n")
    (root / "app").mkdir()
    (root / "app" / "main.py").write_text("print('v1')\n")
    (root / "notes.txt").write_text("ignored\n")


def test_the_inputs_digest_follows_the_context_and_ignores_what_is_not_sent(
    tmp_path: Path,
) -> None:
    _tiny_project(tmp_path)
    first = inputs_digest(plan(BuildOptions(cache="none"), root=tmp_path))
    (tmp_path / "notes.txt").write_text("changed, but never sent\n")
    assert inputs_digest(plan(BuildOptions(cache="none"), root=tmp_path)) == first
    (tmp_path / "app" / "main.py").write_text("print('v2')\n")
    second = inputs_digest(plan(BuildOptions(cache="none"), root=tmp_path))
    assert second != first
    other_platform = plan(BuildOptions(cache="none", platforms=("linux/arm64",)), root=tmp_path)
    assert inputs_digest(other_platform) not in (first, second)


def test_a_local_cache_is_current_only_for_the_same_inputs_and_with_its_index(
    tmp_path: Path,
) -> None:
    (tmp_path / STAMP).write_text("abc\n")
    assert cache_is_current(tmp_path, "abc") is False  # no index.json: never exported
    (tmp_path / "index.json").write_text("{}")
    assert cache_is_current(tmp_path, "abc") is True
    assert cache_is_current(tmp_path, "def") is False


# --- the base image ---


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("ARG BASE_IMAGE=py:3@sha256:ab\nFROM ${BASE_IMAGE}\n", "py:3@sha256:ab"),
        ('  ARG BASE_IMAGE="python:3.12-slim"\n', "python:3.12-slim"),
        ("ARG OTHER=x\nFROM python\n", ""),
        (
            "ARG BASE_IMAGE=pinned\nFROM py:3@sha256:cd AS pinned\nFROM ${BASE_IMAGE} AS app\n",
            "py:3@sha256:cd",
        ),
        ("ARG BASE_IMAGE=pinned\nfrom --platform=linux/amd64 py:3 as pinned\n", "py:3"),
    ],
)
def test_the_dockerfile_names_its_base_in_an_arg_default(text: str, name: str) -> None:
    assert dockerfile_base(text) == name


def test_the_projects_dockerfile_pins_its_base_by_digest() -> None:
    assert base_name(Settings(), ROOT) == DOCKER_HUB_PIN


def test_the_base_image_setting_overrides_the_dockerfile(tmp_path: Path) -> None:
    assert base_name(Settings(base_image="python:3.11-slim"), ROOT) == "python:3.11-slim"
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile").write_text("FROM python:3.11-slim\n")
    with pytest.raises(UsageError) as caught:
        base_name(Settings(), tmp_path)
    assert caught.value.one_line() == (
        "no base image: docker/Dockerfile has no `ARG BASE_IMAGE=` default: "
        "add one (pinned by digest), or set [tool.pipeline] base_image"
    )
