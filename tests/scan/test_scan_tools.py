"""Parsing the scanners' reports (a real Trivy report), and running hadolint and Trivy's config
scan for real on small Dockerfiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import ScannerError
from pipeline.scan.tools import (
    Finding,
    ImageSource,
    Trivy,
    hadolint,
    is_db_error,
    parse_hadolint,
    parse_trivy,
    sbom_components,
    severity_rank,
    trivy_reason,
)
from tests.conftest import FIXTURES, ROOT

TRIVY = str(ROOT / ".venv" / "bin" / "trivy")
HADOLINT = str(ROOT / ".venv" / "bin" / "hadolint")
REPORT = FIXTURES / "trivy-image-report.json"

NO_DB = (
    "2026-11-29T17:15:06Z\tERROR\t[vulndb] The first run cannot skip downloading DB\n"
    "2026-11-29T17:15:06Z\tFATAL\tFatal error\trun error: init error: DB error: database error: "
    "--skip-db-update cannot be specified on the first run\n"
)
DOWNLOAD_FAILED = (
    "2026-11-29T17:15:10Z\tINFO\t[vulndb] Downloading vulnerability DB...\n"
    "2026-11-29T17:15:10Z\tFATAL\tFatal error\trun error: init error: DB error: failed to download"
    " vulnerability DB: OCI repository error: 1 error occurred:\n"
    '\t* Get "https://mirror.gcr.io/v2/": dial tcp: lookup mirror.gcr.io: no such host\n\n\n'
)
IMAGE_MISSING = (
    "2026-11-29T17:20:00Z\tFATAL\tFatal error\trun error: image scan error: scan error: unable to "
    "initialize a scan service: unable to initialize an image scan service: unable to find the "
    "specified image\n"
)


@pytest.fixture(scope="module")
def fixture_report() -> dict[str, list[Finding]]:
    return parse_trivy(json.loads(REPORT.read_text()))


def test_the_real_report_has_two_high_vulnerabilities_with_fixes(
    fixture_report: dict[str, list[Finding]],
) -> None:
    vulns = sorted(fixture_report["vuln"], key=lambda f: f.id)
    assert [(f.id, f.package, f.installed, f.fixed, f.severity) for f in vulns] == [
        ("CVE-2018-18074", "requests", "2.19.0", "2.20.0", "HIGH"),
        ("CVE-2019-10906", "Jinja2", "2.10", "2.10.1", "HIGH"),
    ]
    assert all(f.fixable for f in vulns)
    assert vulns[0].target == (
        "usr/local/local/lib/python3.11/dist-packages/requests-2.19.0.dist-info/METADATA"
    )
    assert vulns[0].url == "https://avd.aquasec.com/nvd/cve-2018-18074"


def test_the_real_report_has_one_critical_secret_where_it_was_planted(
    fixture_report: dict[str, list[Finding]],
) -> None:
    assert fixture_report["secret"] == [
        Finding(
            scanner="secret",
            id="github-pat",
            severity="CRITICAL",
            title="GitHub Personal Access Token",
            target="/app/config.env",
            line=3,
        )
    ]


def test_the_real_report_has_no_misconfigurations(
    fixture_report: dict[str, list[Finding]],
) -> None:
    assert fixture_report["config"] == []


def test_an_empty_report_finds_nothing_in_every_scanner() -> None:
    assert parse_trivy({"SchemaVersion": 2}) == {"vuln": [], "secret": [], "config": []}


def test_passed_misconfiguration_checks_are_not_findings() -> None:
    report = {
        "Results": [
            {
                "Target": "Dockerfile",
                "Class": "config",
                "Misconfigurations": [
                    {"ID": "DS-0001", "Severity": "HIGH", "Status": "PASS", "Title": "ok"},
                    {
                        "ID": "DS-0002",
                        "Severity": "HIGH",
                        "Status": "FAIL",
                        "Title": "Image user should not be 'root'",
                        "CauseMetadata": {"StartLine": 3},
                    },
                ],
            }
        ]
    }
    assert parse_trivy(report)["config"] == [
        Finding(
            "config", "DS-0002", "HIGH", "Image user should not be 'root'", "Dockerfile", line=3
        )
    ]


def test_a_vulnerability_without_a_fixed_version_is_not_fixable() -> None:
    report = {
        "Results": [
            {
                "Target": "Python",
                "Vulnerabilities": [
                    {
                        "VulnerabilityID": "CVE-1",
                        "PkgName": "x",
                        "Severity": "LOW",
                        "Status": "affected",
                    }
                ],
            }
        ]
    }
    (finding,) = parse_trivy(report)["vuln"]
    assert (finding.fixed, finding.fixable, finding.target) == ("", False, "Python")


def test_an_unknown_severity_becomes_unknown() -> None:
    report = {"Results": [{"Vulnerabilities": [{"VulnerabilityID": "X", "Severity": "SEVERE"}]}]}
    assert parse_trivy(report)["vuln"][0].severity == "UNKNOWN"


def test_severities_rank_from_unknown_to_critical() -> None:
    assert [severity_rank(s) for s in ("UNKNOWN", "low", "MEDIUM", "HIGH", "CRITICAL", "?")] == [
        0,
        1,
        2,
        3,
        4,
        0,
    ]


def test_hadolint_levels_map_onto_trivy_severities() -> None:
    items = [
        {"code": "DL1000", "level": "error", "line": 3, "message": "unexpected 'F'\nexpecting"},
        {"code": "DL3013", "level": "warning", "line": 2, "message": "Pin versions in pip."},
        {"code": "DL3066", "level": "info", "line": 4, "message": "Non-numeric user-id"},
        {"code": "SC2086", "level": "style", "line": 5, "message": "Double quote"},
    ]
    assert [
        (f.id, f.severity, f.title, f.line) for f in parse_hadolint(items, "docker/Dockerfile")
    ] == [
        ("DL1000", "HIGH", "unexpected 'F'", 3),
        ("DL3013", "MEDIUM", "Pin versions in pip.", 2),
        ("DL3066", "LOW", "Non-numeric user-id", 4),
        ("SC2086", "LOW", "Double quote", 5),
    ]
    assert parse_hadolint(items, "docker/Dockerfile")[1].url == (
        "https://github.com/hadolint/hadolint/wiki/DL3013"
    )


def test_a_cyclonedx_document_counts_its_components() -> None:
    assert sbom_components({"components": [{"name": "a"}, {"name": "b"}]}) == 2
    assert sbom_components({"bomFormat": "CycloneDX"}) == 0


@pytest.mark.parametrize(
    ("stderr", "missing"),
    [(NO_DB, True), (DOWNLOAD_FAILED, True), (IMAGE_MISSING, False), ("", False)],
)
def test_only_database_errors_mean_not_scanned(stderr: str, missing: bool) -> None:
    assert is_db_error(stderr) is missing


def test_trivy_reason_is_the_fatal_error_without_wrappers() -> None:
    assert trivy_reason(NO_DB) == "--skip-db-update cannot be specified on the first run"
    assert trivy_reason(DOWNLOAD_FAILED) == (
        "failed to download vulnerability DB: OCI repository error: 1 error occurred: "
        'Get "https://mirror.gcr.io/v2/": dial tcp: lookup mirror.gcr.io: no such host'
    )
    assert trivy_reason("just one line\n") == "just one line"


def test_image_sources_become_trivy_arguments() -> None:
    assert ImageSource("local", "gw:dev", platform="linux/amd64").args() == [
        "--image-src",
        "docker",
        "--platform",
        "linux/amd64",
        "gw:dev",
    ]
    assert ImageSource("remote", "127.0.0.1:5000/a@sha256:ab", insecure=True).args() == [
        "--image-src",
        "remote",
        "--insecure",
        "127.0.0.1:5000/a@sha256:ab",
    ]
    assert ImageSource("archive", "gw.tar").args() == ["--input", "gw.tar"]


def test_trivy_skips_the_database_update_only_when_told(tmp_path: Path) -> None:
    source = ImageSource("local", "gw:dev")
    offline = Trivy(db_dir="/db", db_update=False).image_argv(source, ["vuln"], tmp_path / "r")
    online = Trivy().image_argv(source, ["vuln"], tmp_path / "r")
    assert "--skip-db-update" in offline
    assert offline[offline.index("--cache-dir") + 1] == "/db"
    assert "--skip-db-update" not in online
    assert "--cache-dir" not in online


def test_hadolint_lints_a_dockerfile_for_real(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.11-slim\nRUN pip install requests\nUSER 10001\n")
    findings = hadolint(dockerfile, binary=HADOLINT, report_path="docker/Dockerfile")
    assert sorted((f.id, f.severity, f.line, f.target) for f in findings) == [
        ("DL3013", "MEDIUM", 2, "docker/Dockerfile"),
        ("DL3042", "MEDIUM", 2, "docker/Dockerfile"),
    ]


def test_hadolint_on_a_missing_file_is_an_error_not_a_clean_result(tmp_path: Path) -> None:
    with pytest.raises(ScannerError, match="hadolint failed"):
        hadolint(tmp_path / "Dockerfile", binary=HADOLINT)


def test_trivy_config_finds_a_root_user_in_a_dockerfile(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        'FROM python:3.11-slim\nHEALTHCHECK CMD ["true"]\nUSER root\n', encoding="utf-8"
    )
    report = Trivy(binary=TRIVY, db_dir=str(tmp_path / "cache")).config(
        dockerfile, tmp_path / "config.json"
    )
    assert [(f.id, f.severity, f.line) for f in parse_trivy(report)["config"]] == [
        ("DS-0002", "HIGH", 3)
    ]
