"""What a scan found and decided: the target, every scanner's verdict, the document written to
``scan.json`` (read back by ``docker.publish`` and the reports)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import GateError, UsageError
from pipeline.scan.policy import FAILED, NOT_SCANNED, Policy, State, Verdict
from pipeline.scan.tools import SCANNERS, SEVERITIES, Finding

SCHEMA = 1


@dataclass(frozen=True)
class Target:
    """What was scanned: the reference as given, the digest when known, the platform."""

    reference: str
    digest: str = ""
    platform: str = ""
    image_id: str = ""
    source: str = ""
    dockerfile: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "platform": self.platform,
            "image_id": self.image_id,
            "source": self.source,
            "dockerfile": self.dockerfile,
        }


@dataclass(frozen=True)
class ScanResult:
    target: Target
    policy: Policy
    verdicts: tuple[Verdict, ...]
    scanned_at: str = ""
    tools: Mapping[str, str] = field(default_factory=dict)
    artifacts: Mapping[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not any(v.blocks for v in self.verdicts)

    @property
    def result(self) -> str:
        return "passed" if self.passed else "failed"

    @property
    def states(self) -> dict[str, State]:
        return {v.scanner: v.state for v in self.verdicts}

    @property
    def counts(self) -> dict[str, int]:
        """Findings that are not ignored, by severity (highest first), over all scanners."""
        return severity_counts(f for v in self.verdicts for f in v.findings)

    def verdict(self, scanner: str) -> Verdict:
        for v in self.verdicts:
            if v.scanner == scanner:
                return v
        raise KeyError(scanner)

    def to_json(self) -> dict[str, Any]:
        """The document written to ``scan.json`` (read by ``docker.publish`` and the reports)."""
        return {
            "schema": SCHEMA,
            "result": self.result,
            "passed": self.passed,
            "target": self.target.as_json(),
            "scanned_at": self.scanned_at,
            "policy": self.policy.as_json(),
            "states": self.states,
            "counts": self.counts,
            "scanners": {v.scanner: _verdict_json(v) for v in self.verdicts},
            "tools": dict(self.tools),
            "artifacts": dict(self.artifacts),
        }


def severity_counts(findings: Iterable[Finding]) -> dict[str, int]:
    counts = dict.fromkeys(reversed(SEVERITIES), 0)
    for finding in findings:
        counts[finding.severity] = counts.get(finding.severity, 0) + 1
    return counts


def _verdict_json(v: Verdict) -> dict[str, Any]:
    return {
        "state": v.state,
        "required": v.required,
        "reason": v.reason,
        "tool": v.tool,
        "note": v.note,
        "counts": severity_counts(v.findings),
        "failing": [f.as_json() for f in v.failing],
        "findings": [f.as_json() for f in v.findings],
        "ignored": [
            {"finding": i.finding.as_json(), "entry": i.entry.as_json()} for i in v.ignored
        ],
        "expired_ignores": sorted({json.dumps(i.entry.as_json()) for i in v.expired}),
    }


def read_result(path: Path) -> dict[str, Any]:
    """A ``scan.json`` written by ``write_reports`` (for ``docker.publish`` and reports)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"no scan result at {path}", hint="run `invoke docker.scan` first"
        ) from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: corrupt scan result ({exc})", hint="rescan") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UsageError(f"{path}: scan result of another schema", hint="rescan")
    return data


def gate_error(result: ScanResult) -> GateError | None:
    """The one-line failure for a result that does not pass, else None."""
    blocking = [v for v in result.verdicts if v.blocks]
    if not blocking:
        return None
    parts = []
    for v in blocking:
        if v.state == NOT_SCANNED:
            parts.append(f"{v.scanner} not scanned but required ({v.reason})")
        elif v.failing:
            ids = ", ".join(sorted({f.id for f in v.failing})[:5])
            parts.append(f"{v.scanner} failed ({len(v.failing)}: {ids})")
        else:
            parts.append(f"{v.scanner} failed ({v.reason})")
    hints = []
    if any(v.state == FAILED for v in blocking):
        hints.append(
            "fix the image, or accept a finding in the ignore file with a reason and an expiry"
        )
    missing = {v.scanner for v in blocking if v.state == NOT_SCANNED}
    if missing:
        rest = ",".join(s for s in SCANNERS if s in result.policy.require - missing) or "none"
        hints.append(
            "make the scanner run (e.g. --db-dir with a Trivy database), or opt out explicitly: "
            f'--require {rest} (or [tool.pipeline.scan] require = "{rest}")'
        )
    return GateError(f"image scan failed: {'; '.join(parts)}", hint="; ".join(hints))
