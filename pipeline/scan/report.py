"""Scan reports: Markdown (terminal and ``$GITHUB_STEP_SUMMARY``) and SARIF 2.1.0 (code scanning).
The JSON document is ``ScanResult.to_json``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.scan.policy import ARTIFACTS, Verdict
from pipeline.scan.result import ScanResult
from pipeline.scan.tools import SEVERITIES, Finding

SCANNER_NAMES = {
    "vuln": "Vulnerabilities",
    "secret": "Secrets",
    "config": "Misconfigurations",
    "dockerfile": "Dockerfile lint",
    "sbom": "SBOM",
}
STATE_MARKS = {"passed": "✅ passed", "failed": "❌ failed", "not scanned": "⚠️ not scanned"}
MAX_ROWS = 50
"""Findings listed per table; the rest are counted (the step summary has a size limit)."""

SECURITY_SEVERITY = {
    "CRITICAL": "9.5",
    "HIGH": "8.0",
    "MEDIUM": "5.5",
    "LOW": "2.0",
    "UNKNOWN": "0.0",
}
SARIF_LEVEL = {
    "CRITICAL": "error",
    "HIGH": "error",
    "MEDIUM": "warning",
    "LOW": "note",
    "UNKNOWN": "note",
}
TOOL_URIS = {
    "trivy": "https://github.com/aquasecurity/trivy",
    "hadolint": "https://github.com/hadolint/hadolint",
}


# --- Markdown ---


def markdown(result: ScanResult) -> str:
    """A summary: overall result, one row per scanner (state and counts), then the findings that
    fail the gate, the ignored ones and any expired ignore entries."""
    target = result.target
    skipped = sum(1 for v in result.verdicts if v.state == "not scanned")
    if not result.passed:
        title = "❌ failed"
    elif skipped:
        title = f"⚠️ passed, but {skipped} not scanned"
    else:
        title = "✅ passed"
    lines = [f"## Image scan {title}", ""]
    what = f"`{target.reference}`"
    if target.digest and target.digest not in target.reference:
        what += f" (`{target.digest}`)"
    if target.platform:
        what += f", platform `{target.platform}`"
    lines += [f"Scanned {what}.", "", f"Gate: {_policy_text(result)}.", ""]
    header = ["Scanner", "State", *(s.title() for s in reversed(SEVERITIES)), "Notes"]
    lines += [_row(header), _row(["---"] * len(header))]
    for verdict in result.verdicts:
        lines.append(_row(_scanner_row(verdict)))
    not_scanned = [v for v in result.verdicts if v.state == "not scanned"]
    if not_scanned:
        names = ", ".join(SCANNER_NAMES.get(v.scanner, v.scanner) for v in not_scanned)
        lines += ["", f"**Not scanned (not clean): {names}.**"]

    failing = [f for v in result.verdicts for f in v.failing]
    if failing:
        lines += ["", "### Findings that fail the gate", ""]
        lines += _finding_table(failing)
    ignored = [i for v in result.verdicts for i in v.ignored]
    if ignored:
        lines += ["", "### Ignored (see the ignore file)", ""]
        lines += [_row(["ID", "Severity", "Where", "Reason", "Expires"]), _row(["---"] * 5)]
        lines += [
            _row(
                [
                    i.finding.id,
                    i.finding.severity,
                    _where(i.finding),
                    i.entry.reason,
                    i.entry.expires.isoformat(),
                ]
            )
            for i in ignored[:MAX_ROWS]
        ]
        lines += _more(len(ignored))
    expired = {
        (i.entry.id, i.entry.package, i.entry.expires): i.entry
        for v in result.verdicts
        for i in v.expired
    }
    if expired:
        lines += ["", "### Expired ignore entries (no longer applied)", ""]
        for entry in expired.values():
            lines.append(f"- `{entry.id}` expired {entry.expires.isoformat()}: {entry.reason}")
    return "\n".join(lines) + "\n"


def _policy_text(result: ScanResult) -> str:
    policy = result.policy
    severities = ", ".join(s for s in reversed(SEVERITIES) if s in policy.severities)
    text = f"fail on {severities}"
    if policy.ignore_unfixed:
        text += " (vulnerabilities: only with a fix available)"
    required = [s for s in SCANNER_NAMES if s in policy.require]
    text += "; required: " + (", ".join(required) if required else "none")
    return text


def _scanner_row(v: Verdict) -> list[str]:
    name = SCANNER_NAMES.get(v.scanner, v.scanner) + (f" ({v.tool})" if v.tool else "")
    state = STATE_MARKS.get(v.state, v.state) + (
        " (required)" if v.required and v.state == "not scanned" else ""
    )
    if v.state == "not scanned" or v.scanner == "sbom":
        counts = ["-"] * len(SEVERITIES)
    else:
        counts = [str(sum(1 for f in v.findings if f.severity == s)) for s in reversed(SEVERITIES)]
    notes = [note for note in (v.reason, v.note) if note]
    if v.failing:
        notes.append(f"{len(v.failing)} failing")
    if v.ignored:
        notes.append(f"{len(v.ignored)} ignored")
    if v.expired:
        notes.append(f"{len({i.entry for i in v.expired})} expired ignore entries")
    return [name, state, *counts, "; ".join(notes)]


def _finding_table(findings: list[Finding]) -> list[str]:
    header = ["Scanner", "ID", "Severity", "Where", "Installed", "Fixed", "Title"]
    lines = [_row(header), _row(["---"] * len(header))]
    for f in findings[:MAX_ROWS]:
        ident = f"[{f.id}]({f.url})" if f.url else f.id
        lines.append(_row([f.scanner, ident, f.severity, _where(f), f.installed, f.fixed, f.title]))
    return lines + _more(len(findings))


def _where(f: Finding) -> str:
    where = f.package or f.target
    if f.line and not f.package:
        where += f":{f.line}"
    return where


def _more(total: int) -> list[str]:
    return ["", f"…and {total - MAX_ROWS} more (see scan.json)."] if total > MAX_ROWS else []


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# --- SARIF ---


def sarif(result: ScanResult) -> dict[str, Any]:
    """SARIF 2.1.0 with one run per tool (Trivy, hadolint). Image findings point at the
    Dockerfile that built the image (or the file inside the image when there is none); ignored
    findings are included as suppressed, with the ignore entry's reason."""
    by_tool: dict[str, list[tuple[Finding, str]]] = {}
    versions = dict(result.tools)
    for verdict in result.verdicts:
        if verdict.state == "not scanned" or not verdict.tool:
            continue
        items = by_tool.setdefault(verdict.tool, [])
        items += [(f, "") for f in verdict.findings]
        items += [(i.finding, i.entry.reason) for i in verdict.ignored]
    runs = [
        _sarif_run(tool, versions.get(tool, ""), items, result.target.dockerfile)
        for tool, items in by_tool.items()
    ]
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": runs,
    }


def _sarif_run(
    tool: str, version: str, items: list[tuple[Finding, str]], dockerfile: str
) -> dict[str, Any]:
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for finding, suppressed_because in items:
        rule_id = finding.id or "unknown"
        rule = rules.setdefault(rule_id, _sarif_rule(finding))
        if float(SECURITY_SEVERITY[finding.severity]) > float(
            rule["properties"]["security-severity"]
        ):
            rules[rule_id] = _sarif_rule(finding)
        results.append(_sarif_result(finding, dockerfile, suppressed_because))
    driver: dict[str, Any] = {
        "name": tool.capitalize() if tool != "hadolint" else "Hadolint",
        "informationUri": TOOL_URIS.get(tool, ""),
        "rules": list(rules.values()),
    }
    if version:
        driver["version"] = version
    return {
        "tool": {"driver": driver},
        "automationDetails": {"id": f"container-scan/{tool}/"},
        "results": results,
    }


def _sarif_rule(f: Finding) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": f.id or "unknown",
        "name": f.id or "unknown",
        "shortDescription": {"text": f.title or f.id},
        "defaultConfiguration": {"level": SARIF_LEVEL[f.severity]},
        "properties": {
            "security-severity": SECURITY_SEVERITY[f.severity],
            "tags": ["security", f.scanner],
        },
    }
    if f.url:
        rule["helpUri"] = f.url
    return rule


def _sarif_result(f: Finding, dockerfile: str, suppressed_because: str) -> dict[str, Any]:
    in_dockerfile = f.scanner in ("config", "dockerfile")
    if f.scanner == "vuln":
        text = f"{f.package} {f.installed}: {f.id} ({f.severity})"
        text += f", fixed in {f.fixed}" if f.fixed else ", no fix yet"
        text += f". {f.title}" if f.title and f.title != f.id else ""
        text += f" [in the image: {f.target}]"
    elif f.scanner == "secret":
        text = f"{f.title} ({f.severity}) in the image at {f.target}" + (
            f":{f.line}" if f.line else ""
        )
    else:
        text = f"{f.title} ({f.id}, {f.severity})"
    uri = f.target if in_dockerfile or not dockerfile else dockerfile
    region_line = f.line if in_dockerfile and f.line else 1
    result: dict[str, Any] = {
        "ruleId": f.id or "unknown",
        "level": SARIF_LEVEL[f.severity],
        "message": {"text": text},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": uri.lstrip("/") or "Dockerfile"},
                    "region": {"startLine": region_line},
                }
            }
        ],
    }
    if suppressed_because:
        result["suppressions"] = [{"kind": "external", "justification": suppressed_because}]
    return result


def write_reports(result: ScanResult, output_dir: Path) -> dict[str, Path]:
    """Write summary.md, scan.json and scan.sarif (the SBOM is already there)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: output_dir / ARTIFACTS[k] for k in ("summary", "json", "sarif")}
    _atomic(paths["summary"], markdown(result))
    _atomic(paths["json"], json.dumps(result.to_json(), indent=2) + "\n")
    _atomic(paths["sarif"], json.dumps(sarif(result), indent=2) + "\n")
    return paths


def github_outputs(result: ScanResult, paths: Mapping[str, Path]) -> dict[str, str]:
    """Step outputs: ``result`` (passed|failed), the report paths, the states as JSON."""
    return {
        "result": result.result,
        "sarif": str(paths["sarif"]),
        "summary": str(paths["summary"]),
        "json": str(paths["json"]),
        "sbom": result.artifacts.get("sbom", ""),
        "states": json.dumps(result.states),
    }


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
