"""The scan's Markdown summary and SARIF, from results judged by the real gate."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

from pipeline.scan.policy import SCANNERS, IgnoreEntry, Policy, judge
from pipeline.scan.report import MAX_ROWS, markdown, sarif, write_reports
from pipeline.scan.result import ScanResult, Target, read_result
from pipeline.scan.tools import Finding, ScannerRun

TODAY = dt.date(2026, 11, 29)
DEFAULT = Policy()
REQUESTS = Finding(
    "vuln",
    "CVE-2018-18074",
    "HIGH",
    "requests: Redirect from HTTPS to HTTP does not remove Authorization header",
    "usr/lib/python3/dist-packages/requests-2.19.0.dist-info/METADATA",
    "requests",
    "2.19.0",
    "2.20.0",
    url="https://avd.aquasec.com/nvd/cve-2018-18074",
)
JINJA = Finding(
    "vuln", "CVE-2019-10906", "HIGH", "jinja2: sandbox escape", "M", "Jinja2", "2.10", "2.10.1"
)
TOKEN = Finding(
    "secret", "github-pat", "CRITICAL", "GitHub Personal Access Token", "/app/a.env", line=3
)
LINT = Finding(
    "dockerfile",
    "DL3008",
    "MEDIUM",
    "Pin versions | in apt",
    "docker/Dockerfile",
    line=7,
    url="https://github.com/hadolint/hadolint/wiki/DL3008",
)
TARGET = Target(
    "127.0.0.1:5000/test/gw@sha256:7b0b",
    digest="sha256:7b0b",
    platform="linux/amd64",
    dockerfile="docker/Dockerfile",
)


def judged(
    *runs: ScannerRun, policy: Policy = DEFAULT, ignores: tuple[IgnoreEntry, ...] = ()
) -> ScanResult:
    return ScanResult(
        TARGET,
        policy,
        judge(runs, policy, ignores, TODAY),
        scanned_at="2026-11-29T18:00:00+00:00",
        tools={"trivy": "0.76.0", "hadolint": "2.15.1"},
    )


def test_a_passing_summary_shows_every_scanner_and_the_gate() -> None:
    result = judged(*(ScannerRun(s, True, tool="trivy") for s in SCANNERS))
    lines = markdown(result).splitlines()
    assert lines[0] == "## Image scan ✅ passed"
    assert lines[2] == ("Scanned `127.0.0.1:5000/test/gw@sha256:7b0b`, platform `linux/amd64`.")
    assert lines[4] == (
        "Gate: fail on CRITICAL, HIGH (vulnerabilities: only with a fix available); required: none."
    )
    assert lines[6] == "| Scanner | State | Critical | High | Medium | Low | Unknown | Notes |"
    assert lines[8] == "| Vulnerabilities (trivy) | ✅ passed | 0 | 0 | 0 | 0 | 0 |  |"
    assert len(lines) == 13


def test_a_failing_summary_lists_the_failing_findings_with_links() -> None:
    result = judged(ScannerRun("vuln", True, (REQUESTS,), tool="trivy"))
    text = markdown(result)
    assert text.startswith("## Image scan ❌ failed\n")
    assert "| Vulnerabilities (trivy) | ❌ failed | 0 | 1 | 0 | 0 | 0 | 1 failing |" in text
    assert "### Findings that fail the gate" in text
    assert (
        "| vuln | [CVE-2018-18074](https://avd.aquasec.com/nvd/cve-2018-18074) | HIGH | requests "
        "| 2.19.0 | 2.20.0 | requests: Redirect from HTTPS to HTTP does not remove Authorization "
        "header |"
    ) in text


def test_not_scanned_is_shown_as_not_clean_with_its_reason() -> None:
    result = judged(
        ScannerRun.not_scanned("vuln", "no vulnerability database", "trivy"),
        policy=Policy(require=frozenset({"vuln"})),
    )
    text = markdown(result)
    assert (
        "| Vulnerabilities (trivy) | ⚠️ not scanned (required) | - | - | - | - | - "
        "| no vulnerability database |"
    ) in text
    assert "**Not scanned (not clean): Vulnerabilities.**" in text
    assert "✅" not in text
    optional = markdown(judged(ScannerRun.not_scanned("vuln", "no database", "trivy")))
    assert optional.startswith("## Image scan ⚠️ passed, but 1 not scanned\n")
    assert "✅" not in optional


def test_ignored_and_expired_entries_are_listed_with_their_reasons() -> None:
    ignores = (
        IgnoreEntry("CVE-2018-18074", "only our own upstreams", dt.date(2027, 1, 31)),
        IgnoreEntry("CVE-2019-10906", "templates are trusted", dt.date(2026, 10, 1)),
    )
    result = judged(ScannerRun("vuln", True, (REQUESTS, JINJA), tool="trivy"), ignores=ignores)
    text = markdown(result)
    assert ("| CVE-2018-18074 | HIGH | requests | only our own upstreams | 2027-01-31 |") in text
    assert "### Expired ignore entries (no longer applied)" in text
    assert "- `CVE-2019-10906` expired 2026-10-01: templates are trusted" in text
    assert "1 failing; 1 ignored; 1 expired ignore entries" in text


def test_table_cells_escape_pipes_and_long_lists_are_cut() -> None:
    many = tuple(
        Finding("vuln", f"CVE-2020-{n:04}", "HIGH", "t", "x", "p", "1", "2") for n in range(60)
    )
    text = markdown(judged(ScannerRun("vuln", True, many, tool="trivy")))
    assert f"…and {60 - MAX_ROWS} more (see scan.json)." in text
    assert "CVE-2020-0049" in text
    assert "CVE-2020-0050" not in text
    below = markdown(judged(ScannerRun("dockerfile", True, (LINT,), tool="hadolint")))
    assert "| Dockerfile lint (hadolint) | ✅ passed | 0 | 0 | 1 | 0 | 0 |  |" in below
    assert "Pin versions" not in below  # below the gate: counted, not listed
    high = replace(LINT, severity="HIGH")
    failing = markdown(judged(ScannerRun("dockerfile", True, (high,), tool="hadolint")))
    assert (
        "| dockerfile | [DL3008](https://github.com/hadolint/hadolint/wiki/DL3008) | HIGH "
        "| docker/Dockerfile:7 |  |  | Pin versions \\| in apt |"
    ) in failing


def test_sarif_has_one_run_per_tool_with_rules_levels_and_locations() -> None:
    result = judged(
        ScannerRun("vuln", True, (REQUESTS,), tool="trivy"),
        ScannerRun("secret", True, (TOKEN,), tool="trivy"),
        ScannerRun("dockerfile", True, (LINT,), tool="hadolint"),
    )
    doc = sarif(result)
    assert doc["version"] == "2.1.0"
    assert [run["tool"]["driver"]["name"] for run in doc["runs"]] == ["Trivy", "Hadolint"]
    trivy, hadolint = doc["runs"]
    assert trivy["tool"]["driver"]["version"] == "0.76.0"
    assert trivy["automationDetails"] == {"id": "container-scan/trivy/"}
    assert [r["id"] for r in trivy["tool"]["driver"]["rules"]] == ["CVE-2018-18074", "github-pat"]
    assert trivy["tool"]["driver"]["rules"][1]["properties"] == {
        "security-severity": "9.5",
        "tags": ["security", "secret"],
    }
    vuln, secret = trivy["results"]
    assert vuln["level"] == "error"
    assert vuln["message"]["text"].startswith(
        "requests 2.19.0: CVE-2018-18074 (HIGH), fixed in 2.20.0. requests: Redirect"
    )
    # Image findings point at the Dockerfile that built the image.
    assert vuln["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "docker/Dockerfile"},
        "region": {"startLine": 1},
    }
    assert "suppressions" not in secret
    (lint,) = hadolint["results"]
    assert (lint["ruleId"], lint["level"]) == ("DL3008", "warning")
    assert lint["locations"][0]["physicalLocation"]["region"] == {"startLine": 7}


def test_sarif_marks_ignored_findings_as_suppressed_and_skips_unscanned_tools() -> None:
    entry = IgnoreEntry("CVE-2018-18074", "only our own upstreams", dt.date(2027, 1, 31))
    result = judged(
        ScannerRun("vuln", True, (REQUESTS,), tool="trivy"),
        ScannerRun.not_scanned("dockerfile", "no Dockerfile", "hadolint"),
        ignores=(entry,),
    )
    (run,) = sarif(result)["runs"]
    assert run["results"][0]["suppressions"] == [
        {"kind": "external", "justification": "only our own upstreams"}
    ]


def test_reports_are_written_and_the_json_reads_back(tmp_path: Path) -> None:
    result = judged(ScannerRun("vuln", True, (REQUESTS,), tool="trivy"))
    paths = write_reports(result, tmp_path / "scan")
    assert sorted(p.name for p in (tmp_path / "scan").iterdir()) == [
        "scan.json",
        "scan.sarif",
        "summary.md",
    ]
    assert paths["summary"].read_text() == markdown(result)
    assert read_result(paths["json"]) == result.to_json()
    assert json.loads(paths["sarif"].read_text()) == sarif(result)
