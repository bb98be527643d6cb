"""docker.test: its pieces (pure), then every check against the session's image, and the
clean-up when a check fails."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest

from gateway.config import load
from pipeline import engine
from pipeline.build.containertest import (
    LABEL_KEY,
    Check,
    gateway_config,
    inventory_problems,
    missing_labels,
    run_checks,
)
from pipeline.build.record import BuildRecord
from pipeline.errors import GateError

pytest_plugins = ["fixtures_image"]

CHECKS = [
    "healthy",
    "healthz",
    "proxy",
    "not-found",
    "non-root",
    "read-only",
    "drain",
    "labels",
    "no-build-tools",
]
BASE = {
    "org.opencontainers.image.base.name": "docker.io/library/python:3.11-slim",
    "org.opencontainers.image.base.digest": "sha256:aa",
}


def test_the_test_config_is_valid_for_the_gateway_and_routes_only_api(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(gateway_config("http://upstream:8000"))
    config = load(str(path))
    assert [(r.path, r.strip_prefix) for r in config.routes] == [("/api", True)]
    assert [t.label for t in config.routes[0].upstream.targets] == ["upstream:8000"]
    assert config.server.port == 8080


def test_labels_must_match_the_record_and_include_the_base() -> None:
    record = {"org.opencontainers.image.version": "1.2.3"}
    assert missing_labels(record, {**record, **BASE}) == []
    assert missing_labels(record, {"org.opencontainers.image.version": "9", **BASE}) == [
        "org.opencontainers.image.version"
    ]
    assert missing_labels(record, dict(record)) == [
        "org.opencontainers.image.base.digest",
        "org.opencontainers.image.base.name",
    ]


def test_build_tools_left_in_the_image_are_named() -> None:
    found = {
        "uv": ["/usr/local/bin/uv"],
        "caches": ["/root/.cache/pip"],
        "compilers": ["/usr/bin/gcc"],
        "git": [],
    }
    assert inventory_problems(found) == [
        "uv at /usr/local/bin/uv",
        "pip/uv cache at /root/.cache/pip",
        "compiler at /usr/bin/gcc",
    ]
    assert inventory_problems({"uv": [], "caches": [], "compilers": [], "git": []}) == []


def test_a_check_is_one_line() -> None:
    assert Check("proxy", True, "/api/hello").line() == "PASS proxy (/api/hello)"
    assert Check("drain", False, "exit code 137").line() == "FAIL drain: exit code 137"


def _leftovers(run_id: str) -> list[str]:
    label = f"{LABEL_KEY}={run_id}"
    client = engine.docker()
    containers = client.container.list(all=True, filters=[("label", label)])
    networks = client.network.list(filters=[("label", label)])
    return [str(c.name) for c in containers] + [str(n.name) for n in networks]


@pytest.mark.engine
def test_the_built_image_passes_every_check(built_image: BuildRecord) -> None:
    lines: list[str] = []
    run_id = uuid.uuid4().hex[:10]
    checks = run_checks(built_image, report=lines.append, run_id=run_id)
    assert [c.name for c in checks] == CHECKS
    assert [line.split()[0] for line in lines] == ["PASS"] * len(CHECKS)
    assert _leftovers(run_id) == []


@pytest.mark.engine
def test_a_failed_check_is_a_gate_error_naming_it_and_nothing_is_left_behind(
    built_image: BuildRecord,
) -> None:
    wrong = dataclasses.replace(
        built_image, labels={**built_image.labels, "org.opencontainers.image.version": "0.0.0"}
    )
    lines: list[str] = []
    run_id = uuid.uuid4().hex[:10]
    with pytest.raises(GateError) as caught:
        run_checks(wrong, report=lines.append, run_id=run_id)
    assert caught.value.one_line() == (
        "docker.test failed 1 of 9 checks: labels: see the FAIL lines above"
    )
    assert "FAIL labels: missing or different: org.opencontainers.image.version" in lines
    assert _leftovers(run_id) == []
