"""``docker.rescan``: logged in (docker and Trivy), every platform of the index, the gate on
all; pure parts table-tested, then the real thing through the ghcr.io model and registry:2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from fixtures_ghcr import Remote, docker_config
from ghcr_model import GhcrModel

from pipeline.errors import EngineError
from pipeline.registry.auth import Credentials
from pipeline.scan.policy import ARTIFACTS, Policy, judge
from pipeline.scan.rescan import (
    combined,
    combined_gate,
    lookup_error,
    merged_states,
    platforms_to_scan,
    report_all,
    report_dir,
    trivy_with,
    worst,
)
from pipeline.scan.result import ScanResult, Target
from pipeline.scan.tools import Finding, ImageSource, ScannerRun, Trivy
from tests.conftest import ROOT

TRIVY = str(ROOT / ".venv" / "bin" / "trivy")
POLICY = Policy(require=frozenset({"vuln"}))
CVE = Finding("vuln", "CVE-2018-18074", "HIGH", "leak", package="requests", fixed="2.20.0")


def result(platform: str, vuln: ScannerRun | None = None) -> ScanResult:
    runs = [
        vuln or ScannerRun("vuln", True, tool="trivy"),
        ScannerRun("secret", True, tool="trivy"),
        ScannerRun("config", True, tool="trivy"),
        ScannerRun("sbom", True, tool="trivy"),
    ]
    target = Target("r@sha256:" + "a" * 64, platform=platform, source="remote")
    import datetime as dt

    return ScanResult(target, POLICY, judge(runs, POLICY, (), dt.date(2026, 11, 29)))


@pytest.mark.parametrize(
    ("index", "requested", "chosen"),
    [
        (("linux/amd64", "linux/arm64"), None, ["linux/amd64", "linux/arm64"]),
        (("linux/amd64", "linux/arm64"), "linux/arm64", ["linux/arm64"]),
        (("linux/arm64",), "linux/amd64", ["linux/arm64"]),
        ((), None, [""]),
    ],
)
def test_every_platform_of_the_index_is_scanned_unless_one_is_asked_for(
    index: tuple[str, ...], requested: str | None, chosen: list[str]
) -> None:
    assert platforms_to_scan(index, requested) == chosen


def test_several_platforms_report_in_one_directory_each() -> None:
    assert report_dir(Path("out"), "linux/arm64", several=True) == Path("out/linux-arm64")
    assert report_dir(Path("out"), "linux/arm64", several=False) == Path("out")


def test_the_gate_fails_when_any_platform_fails_naming_each() -> None:
    results = {
        "linux/amd64": result("linux/amd64"),
        "linux/arm64": result("linux/arm64", ScannerRun("vuln", True, (CVE,), tool="trivy")),
    }
    assert worst(results) == "linux/arm64"
    assert worst({"linux/amd64": result("linux/amd64")}) == "linux/amd64"
    error = combined_gate(results)
    assert error is not None
    assert error.message == "image scan failed: linux/arm64: vuln failed (1: CVE-2018-18074)"
    assert combined_gate({"linux/amd64": result("linux/amd64")}) is None


def test_a_platform_not_scanned_is_never_clean_overall() -> None:
    results = {
        "linux/amd64": result("linux/amd64"),
        "linux/arm64": result("linux/arm64", ScannerRun.not_scanned("vuln", "no db", "trivy")),
    }
    assert merged_states(results) == {
        "vuln": "not scanned",
        "secret": "passed",
        "config": "passed",
        "sbom": "passed",
    }
    document = combined(results, "r@sha256:" + "a" * 64, "sha256:" + "a" * 64)
    assert (document["result"], document["passed"]) == ("failed", False)
    assert sorted(document["platforms"]) == ["linux/amd64", "linux/arm64"]
    assert "vuln not scanned but required (no db)" in str(combined_gate(results))


def test_trivy_gets_the_credentials_in_its_environment_never_in_argv(tmp_path: Path) -> None:
    creds = Credentials("octocat", "ghp_s3cr3t")
    trivy = trivy_with(Trivy(binary="trivy"), creds, {"PATH": "/bin"})
    assert trivy.env == {
        "PATH": "/bin",
        "TRIVY_USERNAME": "octocat",
        "TRIVY_PASSWORD": "ghp_s3cr3t",
    }
    argv = trivy.image_argv(ImageSource("remote", "h/r@sha256:" + "a" * 64), ["vuln"], tmp_path)
    assert not any("s3cr3t" in a or "octocat" in a for a in argv)
    assert trivy_with(Trivy(), None, {"PATH": "/bin"}).env is None


@pytest.mark.parametrize(
    ("stderr", "logged_in", "line"),
    [
        (
            "ERROR: failed to authorize: ... 401 Unauthorized",
            False,
            "h/r:1: the registry refused to show it (unauthorized): not scanned: set "
            "REGISTRY_USERNAME/REGISTRY_PASSWORD (or GITHUB_TOKEN for ghcr.io)",
        ),
        (
            "denied: permission_denied",
            True,
            "h/r:1: the registry refused to show it (unauthorized): not scanned: check that the "
            "credentials may read the package",
        ),
        ("ERROR: h/r:1: not found", False, "cannot inspect h/r:1 (ERROR: h/r:1: not found)"),
    ],
)
def test_an_image_the_registry_will_not_show_is_one_line(
    stderr: str, logged_in: bool, line: str
) -> None:
    exc = EngineError("cannot inspect h/r:1", stderr=stderr)
    assert lookup_error("h/r:1", exc, logged_in).one_line() == line


# --- for real: a two-platform image, pushed, rescanned with the tiny Trivy database ---

DOCKERFILE = """\
FROM scratch
COPY METADATA /usr/lib/python3/dist-packages/requests-2.32.3.dist-info/METADATA
USER 10001
HEALTHCHECK CMD ["/nothing"]
"""


def push_clean_image(ref: str, tmp_path: Path) -> None:
    """Two platforms, one Python package Trivy knows no advisory for."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "METADATA").write_text("Metadata-Version: 2.1\nName: requests\nVersion: 2.32.3\n")
    argv = ["docker", "buildx", "build", "--quiet", "--load", "-t", ref]
    argv += ["--platform", "linux/amd64,linux/arm64", str(context)]
    subprocess.run(argv, check=True, capture_output=True)
    try:
        subprocess.run(["docker", "push", "-q", ref], check=True, capture_output=True)
    finally:
        subprocess.run(["docker", "image", "rm", "-f", ref], capture_output=True, check=False)


def rescan_task(
    ref: str, out: Path, db: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "invoke", "docker.rescan", "--ref", ref, "--db-dir", str(db)]
    argv += ["--no-db-update", "--require", "all", "--output-dir", str(out)]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.engine
def test_a_rescan_logs_in_and_scans_every_platform(
    remote: Remote, tmp_path: Path, trivy_db: Path
) -> None:
    push_clean_image(f"{remote.ref}:1.0.0", tmp_path)
    out = tmp_path / "rescan"
    env = {**remote.env, "DOCKER_CONFIG": str(docker_config(tmp_path / "fresh"))}
    done = rescan_task(f"{remote.ref}:1.0.0", out, trivy_db, env)
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    doc = json.loads((out / "scan.json").read_text())
    assert (doc["result"], doc["states"]) == (
        "passed",
        dict.fromkeys(("vuln", "secret", "config", "sbom"), "passed"),
    )
    assert {p: d["target"]["platform"] for p, d in doc["platforms"].items()} == {
        "linux/amd64": "linux/amd64",
        "linux/arm64": "linux/arm64",
    }
    for name in ("linux-amd64", "linux-arm64"):
        assert json.loads((out / name / "scan.json").read_text())["result"] == "passed"
    if remote.model is not None:
        token = remote.model.token
        assert token not in done.stdout + done.stderr
        assert not [p for p in out.rglob("*") if p.is_file() and token in p.read_text()]
        assert not list(Path(tempfile.gettempdir()).glob("pipeline-docker-*"))


@pytest.mark.engine
def test_through_ghcr_a_rescan_without_credentials_fails_in_one_line_not_scanned(
    ghcr: GhcrModel, tmp_path: Path, trivy_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = f"{ghcr.host}/test/rescan-{os.getpid()}"
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "pusher")))
    from fixtures_ghcr import docker_login

    docker_login(ghcr, dict(os.environ))
    push_clean_image(f"{ref}:1.0.0", tmp_path)
    out = tmp_path / "rescan"
    out.mkdir()
    (out / "scan.json").write_text('{"result": "passed"}')  # an earlier run's
    anonymous = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REGISTRY_USERNAME", "REGISTRY_PASSWORD", "GITHUB_TOKEN")
    }
    anonymous["DOCKER_CONFIG"] = str(docker_config(tmp_path / "anonymous"))
    done = rescan_task(f"{ref}:1.0.0", out, trivy_db, anonymous)
    assert done.returncode == 1
    assert done.stderr == (
        f"error: {ref}:1.0.0: the registry refused to show it (unauthorized): not scanned: "
        "set REGISTRY_USERNAME/REGISTRY_PASSWORD (or GITHUB_TOKEN for ghcr.io)\n"
    )
    assert not (out / "scan.json").exists(), "nothing may say passed"

    logged = {**anonymous, "REGISTRY_USERNAME": ghcr.user, "REGISTRY_PASSWORD": ghcr.token}
    done = rescan_task(f"{ref}:1.0.0", out, trivy_db, logged)
    assert done.returncode == 0, done.stderr
    doc = json.loads((out / "scan.json").read_text())
    assert (doc["result"], sorted(doc["platforms"])) == ("passed", ["linux/amd64", "linux/arm64"])


def test_a_multi_platform_rescan_writes_one_document_and_outputs_for_all(tmp_path: Path) -> None:
    results = {
        "linux/amd64": result("linux/amd64"),
        "linux/arm64": result("linux/arm64", ScannerRun("vuln", True, (CVE,), tool="trivy")),
    }
    paths = {
        p: {k: tmp_path / p.replace("/", "-") / f for k, f in ARTIFACTS.items()} for p in results
    }
    outputs, lines = tmp_path / "outputs", []
    environ = {"GITHUB_OUTPUT": str(outputs)}
    digest = "sha256:" + "a" * 64
    report_all(
        results,
        paths,
        tmp_path,
        f"h/r@{digest}",
        digest,
        format="github",
        environ=environ,
        log=lines.append,
    )
    document = json.loads((tmp_path / "scan.json").read_text())
    assert (document["result"], document["states"]["vuln"]) == ("failed", "failed")
    assert document["counts"]["HIGH"] == 1
    assert (tmp_path / "summary.md").read_text().count("## Image scan") == 2
    text = outputs.read_text()
    assert "result=failed\n" in text
    assert "platforms=linux/amd64,linux/arm64\n" in text
    assert f"sarif={tmp_path / 'linux-arm64' / 'scan.sarif'}\n" in text
    assert lines[-1] == (
        f"reports (linux/arm64): {paths['linux/arm64']['summary']}, "
        f"{paths['linux/arm64']['json']}, {paths['linux/arm64']['sarif']}"
    )
