"""The scan gate (pure: findings + policy + ignore entries + today -> verdicts), the ignore file,
and ``docker.scan``/``docker.rescan`` for real: Trivy and hadolint against images built here,
with the tiny fixture vulnerability database."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import string
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.build.record import BuildRecord
from pipeline.engine import daemon_info
from pipeline.errors import ConfigError, GateError, ScannerError, UsageError
from pipeline.oci.platform import normalize_platform, pick_platform
from pipeline.scan.policy import (
    SCANNERS,
    IgnoreEntry,
    Policy,
    judge,
    load_ignore,
    parse_ignore,
    parse_require,
    parse_severities,
    scan_settings,
)
from pipeline.scan.report import github_outputs, markdown
from pipeline.scan.result import ScanResult, Target, gate_error
from pipeline.scan.run import scan_image
from pipeline.scan.tools import Finding, ScannerRun, Trivy, parse_trivy
from tests.conftest import FIXTURES, ROOT

TODAY = dt.date(2026, 11, 29)
DEFAULT = Policy()
STRICT = Policy(require=frozenset(SCANNERS))
TRIVY = str(ROOT / ".venv" / "bin" / "trivy")
HADOLINT = str(ROOT / ".venv" / "bin" / "hadolint")

REQUESTS = Finding(
    "vuln",
    "CVE-2018-18074",
    "HIGH",
    "requests: Redirect",
    "METADATA",
    "requests",
    "2.19.0",
    "2.20.0",
)
UNFIXED = Finding("vuln", "CVE-2099-0001", "CRITICAL", "no fix yet", "x", "openssl", "3.0", "")
MEDIUM = replace(REQUESTS, id="CVE-2020-0002", severity="MEDIUM")
TOKEN = Finding(
    "secret", "github-pat", "CRITICAL", "GitHub Personal Access Token", "/app/x", line=3
)
LOW_SECRET = replace(TOKEN, id="generic", severity="LOW")
ROOT_USER = Finding("config", "DS-0002", "HIGH", "Image user should not be 'root'", "Dockerfile")
LINT = Finding("dockerfile", "DL3008", "MEDIUM", "Pin versions in apt get install", "Dockerfile")


def ran(scanner: str, *findings: Finding) -> ScannerRun:
    return ScannerRun(scanner, True, findings)


def clean_runs(**overrides: ScannerRun) -> list[ScannerRun]:
    runs = {name: ran(name) for name in SCANNERS}
    runs.update(overrides)
    return list(runs.values())


def result_of(
    runs: list[ScannerRun], policy: Policy = DEFAULT, *ignores: IgnoreEntry
) -> ScanResult:
    return ScanResult(Target("gw:dev"), policy, judge(runs, policy, ignores, TODAY))


# --- the gate ---


@pytest.mark.parametrize(
    ("finding", "policy", "fails"),
    [
        (REQUESTS, Policy(), True),
        (MEDIUM, Policy(), False),
        (MEDIUM, Policy(severities=frozenset({"MEDIUM", "HIGH", "CRITICAL"})), True),
        (UNFIXED, Policy(), False),
        (UNFIXED, Policy(ignore_unfixed=False), True),
        (TOKEN, Policy(), True),
        (LOW_SECRET, Policy(), False),
        (ROOT_USER, Policy(), True),
        (ROOT_USER, Policy(severities=frozenset({"CRITICAL"})), False),
        (LINT, Policy(), False),
        (replace(LINT, severity="HIGH"), Policy(), True),
    ],
)
def test_a_finding_fails_the_gate_at_a_gating_severity(
    finding: Finding, policy: Policy, fails: bool
) -> None:
    assert policy.gates(finding) is fails


def test_secrets_fail_whether_or_not_a_fix_exists() -> None:
    assert not TOKEN.fixable
    assert Policy(ignore_unfixed=True).gates(TOKEN)


def test_no_findings_in_any_scanner_passes() -> None:
    result = result_of(clean_runs())
    assert result.passed
    assert result.states == dict.fromkeys(SCANNERS, "passed")
    assert result.counts == {"CRITICAL": 0, "HIGH": 0, "MEDIUM": 0, "LOW": 0, "UNKNOWN": 0}


def test_a_fixable_high_vulnerability_fails_the_vuln_scanner_only() -> None:
    result = result_of(clean_runs(vuln=ran("vuln", REQUESTS, MEDIUM, UNFIXED)))
    assert not result.passed
    assert result.states["vuln"] == "failed"
    assert [s for s, state in result.states.items() if state == "failed"] == ["vuln"]
    assert result.verdict("vuln").failing == (REQUESTS,)
    assert result.counts == {"CRITICAL": 1, "HIGH": 1, "MEDIUM": 1, "LOW": 0, "UNKNOWN": 0}


def test_findings_below_the_gate_are_reported_but_pass() -> None:
    result = result_of(clean_runs(dockerfile=ran("dockerfile", LINT)))
    assert result.passed
    assert result.verdict("dockerfile").findings == (LINT,)
    assert result.verdict("dockerfile").failing == ()


def test_not_scanned_is_never_passed_and_fails_only_when_required() -> None:
    runs = clean_runs(vuln=ScannerRun.not_scanned("vuln", "no vulnerability database"))
    optional = result_of(runs)
    required = result_of(runs, Policy(require=frozenset({"vuln"})))
    assert optional.states["vuln"] == required.states["vuln"] == "not scanned"
    assert optional.passed
    assert not required.passed
    assert optional.verdict("vuln").reason == "no vulnerability database"


def test_a_required_scanner_that_did_not_run_at_all_is_not_scanned() -> None:
    result = result_of([ran("vuln")], Policy(require=frozenset({"vuln", "dockerfile"})))
    assert result.states == {"vuln": "passed", "dockerfile": "not scanned"}
    assert not result.passed


def test_a_scanner_that_ran_with_a_failure_reason_fails_without_findings() -> None:
    runs = clean_runs(sbom=ScannerRun("sbom", True, reason="the SBOM lists no components"))
    assert result_of(runs).states["sbom"] == "failed"


def test_an_ignore_entry_with_a_future_expiry_ignores_its_finding() -> None:
    entry = IgnoreEntry("CVE-2018-18074", "not reachable", dt.date(2027, 1, 31))
    result = result_of(clean_runs(vuln=ran("vuln", REQUESTS)), Policy(), entry)
    assert result.passed
    assert result.verdict("vuln").ignored[0].entry == entry
    assert result.verdict("vuln").findings == ()
    assert result.counts["HIGH"] == 0


def test_an_ignore_entry_ignores_through_its_expiry_day_and_not_after() -> None:
    entry = IgnoreEntry("CVE-2018-18074", "not reachable", TODAY)
    runs = clean_runs(vuln=ran("vuln", REQUESTS))
    policy = Policy()
    assert ScanResult(Target("x"), policy, judge(runs, policy, [entry], TODAY)).passed
    after = ScanResult(Target("x"), policy, judge(runs, policy, [entry], TODAY + dt.timedelta(1)))
    assert not after.passed
    assert after.verdict("vuln").expired[0].entry == entry


def test_an_expired_ignore_entry_no_longer_ignores() -> None:
    entry = IgnoreEntry("CVE-2018-18074", "not reachable", dt.date(2026, 1, 31))
    result = result_of(clean_runs(vuln=ran("vuln", REQUESTS)), Policy(), entry)
    assert not result.passed
    assert result.verdict("vuln").failing == (REQUESTS,)
    assert [i.entry for i in result.verdict("vuln").expired] == [entry]


def test_an_ignore_entry_with_a_package_ignores_only_that_package() -> None:
    other = replace(REQUESTS, package="urllib3")
    entry = IgnoreEntry("cve-2018-18074", "x", dt.date(2027, 1, 1), package="Requests")
    result = result_of(clean_runs(vuln=ran("vuln", REQUESTS, other)), Policy(), entry)
    assert result.verdict("vuln").failing == (other,)


def test_ignore_entries_also_apply_to_secrets_and_checks() -> None:
    entries = [
        IgnoreEntry("github-pat", "test fixture token", dt.date(2027, 1, 1)),
        IgnoreEntry("DS-0002", "root needed", dt.date(2027, 1, 1)),
    ]
    runs = clean_runs(secret=ran("secret", TOKEN), config=ran("config", ROOT_USER))
    assert result_of(runs, Policy(), *entries).passed


def test_the_real_report_fails_on_its_vulnerabilities_and_its_secret() -> None:
    found = parse_trivy(json.loads((FIXTURES / "trivy-image-report.json").read_text()))
    runs = clean_runs(vuln=ran("vuln", *found["vuln"]), secret=ran("secret", *found["secret"]))
    result = result_of(runs)
    assert result.states == {
        "vuln": "failed",
        "secret": "failed",
        "config": "passed",
        "dockerfile": "passed",
        "sbom": "passed",
    }
    assert result.counts == {"CRITICAL": 1, "HIGH": 2, "MEDIUM": 0, "LOW": 0, "UNKNOWN": 0}
    error = gate_error(result)
    assert error is not None
    assert error.one_line().startswith(
        "image scan failed: vuln failed (2: CVE-2018-18074, CVE-2019-10906); "
        "secret failed (1: github-pat): fix the image"
    )


def test_a_passing_result_has_no_gate_error() -> None:
    assert gate_error(result_of(clean_runs())) is None


def test_a_required_scanner_not_scanned_explains_itself_in_the_gate_error() -> None:
    runs = clean_runs(vuln=ScannerRun.not_scanned("vuln", "no vulnerability database"))
    error = gate_error(result_of(runs, Policy(require=frozenset(SCANNERS))))
    assert isinstance(error, GateError)
    assert error.message == (
        "image scan failed: vuln not scanned but required (no vulnerability database)"
    )
    assert error.hint == (
        "make the scanner run (e.g. --db-dir with a Trivy database), or opt out explicitly: "
        "--require secret,config,dockerfile,sbom (or [tool.pipeline.scan] require = "
        '"secret,config,dockerfile,sbom")'
    )


def test_the_default_requirement_fails_a_scan_without_vulnerabilities_naming_the_opt_out() -> None:
    runs = clean_runs(vuln=ScannerRun.not_scanned("vuln", "no vulnerability database"))
    require = parse_require(scan_settings({})["require"])
    error = gate_error(result_of(runs, Policy(require=require)))
    assert isinstance(error, GateError)
    assert error.one_line() == (
        "image scan failed: vuln not scanned but required (no vulnerability database): make the "
        "scanner run (e.g. --db-dir with a Trivy database), or opt out explicitly: --require "
        'none (or [tool.pipeline.scan] require = "none")'
    )
    assert gate_error(result_of(runs, Policy(require=parse_require("none")))) is None


@pytest.mark.parametrize(
    ("setting", "ci", "require"),
    [
        ({}, False, "vuln"),
        ({}, True, "all"),
        ({"require": "auto"}, False, "vuln"),
        ({"require": "AUTO"}, True, "all"),
        ({"require": ""}, True, ""),
        ({"require": "none"}, False, "none"),
        ({"require": "vuln,secret"}, True, "vuln,secret"),
    ],
)
def test_the_scan_requirement_fails_closed_by_default_and_requires_everything_in_ci(
    setting: dict[str, str], ci: bool, require: str
) -> None:
    assert scan_settings({"scan": setting}, ci=ci)["require"] == require


def test_the_result_json_carries_states_counts_and_policy() -> None:
    runs = clean_runs(vuln=ScannerRun.not_scanned("vuln", "no db"), secret=ran("secret", TOKEN))
    doc = result_of(runs, Policy(require=frozenset({"vuln"}))).to_json()
    assert doc["result"] == "failed"
    assert doc["passed"] is False
    assert doc["schema"] == 1
    assert doc["states"] == {
        "vuln": "not scanned",
        "secret": "failed",
        "config": "passed",
        "dockerfile": "passed",
        "sbom": "passed",
    }
    assert doc["policy"] == {
        "severities": ["HIGH", "CRITICAL"],
        "ignore_unfixed": True,
        "require": ["vuln"],
    }
    assert doc["scanners"]["vuln"]["reason"] == "no db"
    assert doc["scanners"]["secret"]["failing"][0]["id"] == "github-pat"
    assert json.loads(json.dumps(doc)) == doc


def test_github_outputs_name_the_result_and_the_reports(tmp_path: Path) -> None:
    paths = {k: tmp_path / f"{k}.x" for k in ("summary", "json", "sarif")}
    outputs = github_outputs(result_of(clean_runs()), paths)
    assert outputs["result"] == "passed"
    assert outputs["sarif"] == str(tmp_path / "sarif.x")
    assert outputs["summary"] == str(tmp_path / "summary.x")
    assert json.loads(outputs["states"]) == dict.fromkeys(SCANNERS, "passed")


# --- flags and settings ---


def test_severities_parse_from_a_comma_list() -> None:
    assert parse_severities("high, Critical") == frozenset({"HIGH", "CRITICAL"})
    assert parse_severities(["LOW"]) == frozenset({"LOW"})


@pytest.mark.parametrize("value", ["HIGH,SEVERE", "", ","])
def test_bad_severities_are_usage_errors(value: str) -> None:
    with pytest.raises(UsageError):
        parse_severities(value)


def test_require_all_means_every_scanner_the_command_runs() -> None:
    assert parse_require("all") == frozenset(SCANNERS)
    assert parse_require("all", ("vuln", "sbom")) == frozenset({"vuln", "sbom"})
    assert parse_require("vuln,secret") == frozenset({"vuln", "secret"})
    assert parse_require("") == frozenset()
    assert parse_require("none") == frozenset()


def test_requiring_an_unknown_or_unavailable_scanner_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown scanner 'virus'"):
        parse_require("vuln,virus")
    with pytest.raises(UsageError, match="does not run the dockerfile scanner"):
        parse_require("dockerfile", ("vuln", "secret", "config", "sbom"))


def test_scan_settings_default_to_the_documented_values() -> None:
    assert scan_settings({}) == {
        "severity": "HIGH,CRITICAL",
        "ignore_unfixed": True,
        "require": "vuln",
        "ignore_file": ".scanignore.toml",
        "output_dir": "build/scan",
        "db_dir": "",
        "db_update": True,
    }
    assert scan_settings({"scan": {"db_update": "false", "require": "all"}})["db_update"] is False


def test_scan_settings_come_through_invokes_config() -> None:
    from invoke.config import Config

    config = Config(overrides={"docker": {"scan": {"db_dir": "/var/trivy", "require": "all"}}})
    conf = scan_settings(dict(config.docker))
    assert (conf["db_dir"], conf["require"]) == ("/var/trivy", "all")


def test_a_scan_setting_that_is_not_a_table_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must be a table"):
        scan_settings({"scan": "HIGH"})


def test_an_unknown_scan_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\[tool.pipeline.scan\] unknown key 'severities'"):
        scan_settings({"scan": {"severities": "HIGH"}})


@pytest.mark.parametrize(
    ("platforms", "host", "picked"),
    [
        (["linux/amd64", "linux/arm64"], "linux/arm64", "linux/arm64"),
        (["linux/arm64"], "linux/amd64", "linux/arm64"),
        ([], "linux/amd64", "linux/amd64"),
    ],
)
def test_the_host_platform_is_scanned_when_the_image_has_it(
    platforms: list[str], host: str, picked: str
) -> None:
    assert pick_platform(platforms, host) == picked


def test_daemon_platforms_are_normalized() -> None:
    assert normalize_platform("linux", "x86_64") == "linux/amd64"
    assert normalize_platform("linux", "aarch64") == "linux/arm64"
    assert normalize_platform("linux", "amd64") == "linux/amd64"


# --- the ignore file ---


def test_the_ignore_file_reads_id_reason_expiry_and_package() -> None:
    text = """
[[ignore]]
id = "CVE-2018-18074"
reason = "only our own upstreams"
expires = 2027-01-31
package = "requests"

[[ignore]]
id = "github-pat"
reason = "a revoked test token"
expires = "2026-12-01"
"""
    assert parse_ignore(text) == [
        IgnoreEntry("CVE-2018-18074", "only our own upstreams", dt.date(2027, 1, 31), "requests"),
        IgnoreEntry("github-pat", "a revoked test token", dt.date(2026, 12, 1)),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[ignore]]\nid = "CVE-1"\nexpires = 2027-01-01\n', r"#1 \(CVE-1\): missing reason"),
        ('[[ignore]]\nid = "CVE-1"\nreason = " "\nexpires = 2027-01-01\n', "missing reason"),
        ('[[ignore]]\nid = "CVE-1"\nreason = "x"\n', "missing or invalid expires"),
        ('[[ignore]]\nid = "CVE-1"\nreason = "x"\nexpires = "soon"\n', "invalid expires"),
        ('[[ignore]]\nid = "CVE-1"\nreason = "x"\nexpires = 2027-01-01T00:00:00\n', "expires"),
        ('[[ignore]]\nreason = "x"\nexpires = 2027-01-01\n', "#1: missing id"),
        (
            '[[ignore]]\nid = "C"\nreason = "x"\nexpires = 2027-01-01\nwhy = 1\n',
            "unknown key 'why'",
        ),
        ('[ignores]\nid = "C"\n', "unknown key 'ignores'"),
        ("[[ignore]\n", "invalid TOML"),
    ],
)
def test_an_incomplete_ignore_entry_is_a_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_ignore(text, ".scanignore.toml")
    assert caught.value.exit_code == 2
    assert "\n" not in caught.value.one_line()


def test_the_repository_ignore_file_is_valid() -> None:
    assert load_ignore(ROOT / ".scanignore.toml", must_exist=True) == []


def test_a_missing_default_ignore_file_ignores_nothing_but_a_named_one_is_an_error(
    tmp_path: Path,
) -> None:
    assert load_ignore(tmp_path / "absent.toml") == []
    with pytest.raises(ConfigError, match="does not exist"):
        load_ignore(tmp_path / "absent.toml", must_exist=True)


def test_docker_scan_with_an_ignore_entry_without_expiry_exits_2_with_one_line(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "ignore.toml"
    bad.write_text('[[ignore]]\nid = "CVE-2018-18074"\nreason = "x"\n')
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "docker.scan", "--ignore-file", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {bad}: [[ignore]] #1 (CVE-2018-18074): missing or invalid expires: "
        "e.g. expires = 2027-01-31"
    )


# --- for real: images, Trivy, hadolint (engine) ---

VULNERABLE_DOCKERFILE = """\
FROM python:3.11-slim
# Trivy finds Python packages by their dist-info METADATA: requests 2.19.0 "installed" offline.
COPY METADATA /usr/lib/python3/dist-packages/requests-2.19.0.dist-info/METADATA
USER 10001
HEALTHCHECK CMD ["python", "-c", "pass"]
"""
SECRET_DOCKERFILE = """\
FROM python:3.11-slim
COPY config.env /app/config.env
# Deleting it later does not take it out of the layer that added it.
RUN rm /app/config.env
USER 10001
HEALTHCHECK CMD ["python", "-c", "pass"]
"""


def _build(context: Path, tag: str, *, platforms: str = "", secret: bool = False) -> None:
    argv = ["docker", "buildx", "build", "--load", "-t", tag]
    if platforms:
        argv += ["--platform", platforms]
    if secret:
        argv += ["--secret", f"id=ca,src={os.environ['PIP_CERT']}"]
    argv += ["-f", str(context / "Dockerfile"), str(context)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def _rmi(*tags: str) -> None:
    subprocess.run(["docker", "image", "rm", "-f", *tags], capture_output=True, check=False)


@pytest.fixture(scope="module")
def vulnerable_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A multi-platform image with requests 2.19.0 (CVE-2018-18074), and its Dockerfile."""
    context = tmp_path_factory.mktemp("vulnerable")
    (context / "Dockerfile").write_text(VULNERABLE_DOCKERFILE)
    (context / "METADATA").write_text("Metadata-Version: 2.1\nName: requests\nVersion: 2.19.0\n")
    tag = f"scan-test/{uuid.uuid4().hex[:12]}:vulnerable"
    try:
        _build(context, tag, platforms="linux/amd64,linux/arm64")
        yield tag, context / "Dockerfile"
    finally:
        _rmi(tag)


@pytest.fixture(scope="module")
def secret_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An image with a GitHub token in one of its layers (removed in the next one)."""
    context = tmp_path_factory.mktemp("secret")
    alphabet = string.ascii_letters + string.digits
    token = "ghp_" + "".join(secrets.choice(alphabet) for _ in range(36))
    (context / "config.env").write_text(f"LOG_LEVEL=info\nGITHUB_TOKEN={token}\n")
    (context / "Dockerfile").write_text(SECRET_DOCKERFILE)
    tag = f"scan-test/{uuid.uuid4().hex[:12]}:secret"
    try:
        _build(context, tag)
        yield tag, context / "Dockerfile"
    finally:
        _rmi(tag)


@pytest.fixture(scope="module")
def project_image(built_image: BuildRecord) -> str:
    """The project's own image (docker/Dockerfile), built once per session by the pipeline
    itself, on the base the settings name."""
    return built_image.reference


@pytest.fixture(scope="module")
def no_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Trivy cache without a vulnerability database."""
    return tmp_path_factory.mktemp("no-db")


def _scan(
    ref: str,
    dockerfile: Path | None,
    db: Path,
    out: Path,
    *ignores: IgnoreEntry,
    policy: Policy = STRICT,
    **kwargs: object,
) -> ScanResult:
    return scan_image(
        ref,
        policy,
        output_dir=out,
        trivy=Trivy(binary=TRIVY, db_dir=str(db), db_update=False),
        ignores=ignores,
        today=TODAY,
        dockerfile=dockerfile,
        dockerfile_label="docker/Dockerfile",
        hadolint_bin=HADOLINT,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.engine
def test_an_image_with_requests_2_19_0_fails_the_gate(
    vulnerable_image: tuple[str, Path], trivy_db: Path, tmp_path: Path
) -> None:
    tag, dockerfile = vulnerable_image
    result = _scan(tag, dockerfile, trivy_db, tmp_path, platform=daemon_info().platform)
    assert result.states == {
        "vuln": "failed",
        "secret": "passed",
        "config": "passed",
        "dockerfile": "passed",
        "sbom": "passed",
    }
    assert not result.passed
    assert [(f.id, f.package, f.fixed) for f in result.verdict("vuln").failing] == [
        ("CVE-2018-18074", "requests", "2.20.0")
    ]
    assert result.target.platform == daemon_info().platform
    sbom = json.loads((tmp_path / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert "requests" in {c["name"] for c in sbom["components"]}


@pytest.mark.engine
def test_an_unexpired_ignore_entry_for_the_cve_lets_it_pass(
    vulnerable_image: tuple[str, Path], trivy_db: Path, tmp_path: Path
) -> None:
    tag, dockerfile = vulnerable_image
    entry = IgnoreEntry("CVE-2018-18074", "test: not reachable", dt.date(2027, 1, 31))
    result = _scan(tag, dockerfile, trivy_db, tmp_path, entry)
    assert result.passed
    assert result.states == dict.fromkeys(SCANNERS, "passed")
    assert [i.finding.id for i in result.verdict("vuln").ignored] == ["CVE-2018-18074"]


@pytest.mark.engine
def test_an_expired_ignore_entry_for_the_cve_fails_again(
    vulnerable_image: tuple[str, Path], trivy_db: Path, tmp_path: Path
) -> None:
    tag, dockerfile = vulnerable_image
    entry = IgnoreEntry("CVE-2018-18074", "test: not reachable", dt.date(2026, 10, 31))
    result = _scan(tag, dockerfile, trivy_db, tmp_path, entry)
    assert not result.passed
    assert result.states["vuln"] == "failed"
    assert "`CVE-2018-18074` expired 2026-10-31" in markdown(result)


@pytest.mark.engine
def test_without_a_database_vulnerabilities_are_not_scanned_never_clean(
    vulnerable_image: tuple[str, Path], no_db: Path, tmp_path: Path
) -> None:
    tag, dockerfile = vulnerable_image
    result = _scan(tag, dockerfile, no_db, tmp_path, policy=Policy(require=frozenset({"vuln"})))
    assert result.states == {
        "vuln": "not scanned",
        "secret": "passed",
        "config": "passed",
        "dockerfile": "passed",
        "sbom": "passed",
    }
    assert result.verdict("vuln").reason == (
        "no vulnerability database (--skip-db-update cannot be specified on the first run)"
    )
    assert result.counts["HIGH"] == 0  # nothing was looked at: that is not "clean"
    assert not result.passed


@pytest.mark.engine
def test_the_local_store_cannot_scan_another_platform_and_says_so(
    vulnerable_image: tuple[str, Path], trivy_db: Path, tmp_path: Path
) -> None:
    tag, dockerfile = vulnerable_image
    other = "linux/arm64" if daemon_info().platform == "linux/amd64" else "linux/amd64"
    (tmp_path / "scan.json").write_text('{"result": "passed"}')  # from an earlier scan
    with pytest.raises(ScannerError, match=f"asked to scan {other} of {tag} but Trivy read"):
        _scan(tag, dockerfile, trivy_db, tmp_path, platform=other)
    assert not (tmp_path / "scan.json").exists()


@pytest.mark.engine
def test_a_token_planted_in_a_layer_fails_the_secret_scan(
    secret_image: tuple[str, Path], trivy_db: Path, tmp_path: Path
) -> None:
    tag, dockerfile = secret_image
    result = _scan(tag, dockerfile, trivy_db, tmp_path)
    assert result.states["secret"] == "failed"
    assert result.states["vuln"] == "passed"
    assert [(f.id, f.severity, f.target) for f in result.verdict("secret").failing] == [
        ("github-pat", "CRITICAL", "/app/config.env")
    ]
    assert not result.passed


@pytest.mark.engine
def test_the_projects_own_image_passes(project_image: str, trivy_db: Path, tmp_path: Path) -> None:
    result = _scan(project_image, ROOT / "docker" / "Dockerfile", trivy_db, tmp_path)
    assert result.states == dict.fromkeys(SCANNERS, "passed"), markdown(result)
    assert result.passed


def _invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.engine
def test_docker_scan_reads_the_build_record_and_writes_every_report(
    vulnerable_image: tuple[str, Path], trivy_db: Path, tmp_path: Path
) -> None:
    tag, dockerfile = vulnerable_image
    name, _, version = tag.rpartition(":")
    record = tmp_path / "image.toml"
    BuildRecord(name, version, [version], ["linux/amd64", "linux/arm64"], loaded=True).write(record)
    step_summary, outputs = tmp_path / "step-summary.md", tmp_path / "outputs"
    out = tmp_path / "scan"
    done = _invoke(
        "docker.scan",
        *("--db-dir", str(trivy_db), "--no-db-update", "--require", "all"),
        *("--output-dir", str(out), "--ignore-file", str(ROOT / ".scanignore.toml")),
        "--format",
        "github",
        env={
            "INVOKE_DOCKER_RECORD": str(record),
            "INVOKE_DOCKER_DOCKERFILE": str(dockerfile),
            "GITHUB_STEP_SUMMARY": str(step_summary),
            "GITHUB_OUTPUT": str(outputs),
        },
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().startswith(
        "error: image scan failed: vuln failed (1: CVE-2018-18074): fix the image"
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "sbom.cdx.json",
        "scan.json",
        "scan.sarif",
        "summary.md",
        "trivy-config.json",
        "trivy-image.json",
    ]
    doc = json.loads((out / "scan.json").read_text())
    assert doc["result"] == "failed"
    assert doc["target"]["reference"] == tag
    assert doc["target"]["platform"] == daemon_info().platform
    assert step_summary.read_text() == (out / "summary.md").read_text()
    assert "result=failed\n" in outputs.read_text()
    assert f"sarif={out / 'scan.sarif'}\n" in outputs.read_text()


def _pushed(local: str, repo: str) -> Iterator[str]:
    """``local`` pushed as ``repo:1.0.0``; the local tag removed afterwards."""
    pushed = f"{repo}:1.0.0"
    subprocess.run(["docker", "tag", local, pushed], check=True, capture_output=True)
    try:
        subprocess.run(["docker", "push", "-q", pushed], check=True, capture_output=True)
        yield pushed
    finally:
        _rmi(pushed)


@pytest.fixture
def pushed_vulnerable(vulnerable_image: tuple[str, Path], scratch_repo: str) -> Iterator[str]:
    yield from _pushed(vulnerable_image[0], scratch_repo)


@pytest.mark.engine
def test_docker_rescan_of_a_pushed_vulnerable_image_fails_the_gate(
    pushed_vulnerable: str, trivy_db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rescan"
    done = _invoke(
        "docker.rescan",
        *("--ref", pushed_vulnerable, "--db-dir", str(trivy_db), "--no-db-update"),
        *("--require", "all", "--output-dir", str(out), "--platform", "linux/arm64"),
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().startswith(
        "error: image scan failed: vuln failed (1: CVE-2018-18074)"
    )
    doc = json.loads((out / "scan.json").read_text())
    repo = pushed_vulnerable.rsplit(":", 1)[0]
    assert doc["target"]["reference"] == f"{repo}@{doc['target']['digest']}"
    assert doc["target"]["digest"].startswith("sha256:")
    assert doc["target"]["platform"] == "linux/arm64"
    assert doc["states"] == {
        "vuln": "failed",
        "secret": "passed",
        "config": "passed",
        "sbom": "passed",
    }


@pytest.fixture
def pushed_project(project_image: str, scratch_repo: str) -> Iterator[str]:
    yield from _pushed(project_image, scratch_repo)


@pytest.mark.engine
def test_docker_rescan_of_the_projects_image_passes(
    pushed_project: str, trivy_db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rescan"
    done = _invoke(
        "docker.rescan",
        *("--ref", pushed_project, "--db-dir", str(trivy_db), "--no-db-update"),
        *("--require", "all", "--output-dir", str(out), "--format", "json"),
    )
    assert done.returncode == 0, done.stderr + done.stdout
    doc = json.loads(done.stdout)
    assert doc["result"] == "passed"
    assert doc["states"] == dict.fromkeys(("vuln", "secret", "config", "sbom"), "passed")
