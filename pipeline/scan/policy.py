"""``docker.scan`` and ``docker.rescan``: scan an image, then judge the findings.

The gate is pure: scanner runs + policy + ignore entries + today's date give a verdict per scanner
and overall. Every scanner ends in one of three states: ``passed``, ``failed`` or ``not scanned``
(it could not run, e.g. no vulnerability database). "Not scanned" is never shown as clean, and it
fails the gate for a scanner the policy requires."""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.config import parse_bool
from pipeline.errors import (
    ConfigError,
    UsageError,
)
from pipeline.scan.tools import (
    SCANNERS,
    SEVERITIES,
    Finding,
    ScannerRun,
)

State = Literal["passed", "failed", "not scanned"]
PASSED: State = "passed"
FAILED: State = "failed"
NOT_SCANNED: State = "not scanned"

DEFAULT_SEVERITIES = frozenset({"HIGH", "CRITICAL"})
ARTIFACTS = {
    "summary": "summary.md",
    "json": "scan.json",
    "sarif": "scan.sarif",
    "sbom": "sbom.cdx.json",
    "trivy_image": "trivy-image.json",
    "trivy_config": "trivy-config.json",
}


# --- policy ---


@dataclass(frozen=True)
class Policy:
    """What fails the gate. ``severities``: the gating severities (secrets, misconfigurations and
    Dockerfile findings fail at these too); ``ignore_unfixed``: a vulnerability fails only when a
    fixed version exists; ``require``: scanners that must have run ("not scanned" fails them)."""

    severities: frozenset[str] = DEFAULT_SEVERITIES
    ignore_unfixed: bool = True
    require: frozenset[str] = frozenset()

    def gates(self, finding: Finding) -> bool:
        """Does this finding, unless ignored, fail its scanner?"""
        if finding.severity not in self.severities:
            return False
        return not (finding.scanner == "vuln" and self.ignore_unfixed and not finding.fixable)

    def as_json(self) -> dict[str, Any]:
        return {
            "severities": [s for s in SEVERITIES if s in self.severities],
            "ignore_unfixed": self.ignore_unfixed,
            "require": [s for s in SCANNERS if s in self.require],
        }


def parse_severities(value: str | Iterable[str]) -> frozenset[str]:
    """``HIGH,CRITICAL`` (or a list) as a set of severities; unknown names are a usage error."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = {str(item).strip().upper() for item in items if str(item).strip()}
    unknown = sorted(names - set(SEVERITIES))
    if unknown:
        raise UsageError(
            f"--severity: unknown severity {unknown[0]!r}", hint=f"use {','.join(SEVERITIES)}"
        )
    if not names:
        raise UsageError("--severity: empty", hint="e.g. --severity HIGH,CRITICAL")
    return frozenset(names)


def parse_require(
    value: str | Iterable[str], available: Sequence[str] = SCANNERS
) -> frozenset[str]:
    """``vuln,secret`` or ``all`` (or a list); ``none`` or empty requires nothing. ``all`` is
    every scanner the command runs (``available``); naming one it does not run is an error."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = {str(item).strip().lower() for item in items if str(item).strip()}
    if "all" in names:
        return frozenset(available)
    names.discard("none")
    unknown = sorted(names - set(SCANNERS))
    if unknown:
        raise UsageError(
            f"--require: unknown scanner {unknown[0]!r}", hint=f"use all or {','.join(SCANNERS)}"
        )
    unavailable = sorted(names - set(available))
    if unavailable:
        raise UsageError(
            f"--require: this command does not run the {unavailable[0]} scanner",
            hint=f"use all or {','.join(available)}",
        )
    return frozenset(names)


# --- ignore file ---


@dataclass(frozen=True)
class IgnoreEntry:
    """One accepted finding: its ``id`` (and optionally ``package``), why, and until when. The
    entry ignores through its ``expires`` day; from the next day on it no longer does."""

    id: str
    reason: str
    expires: dt.date
    package: str = ""

    def matches(self, finding: Finding) -> bool:
        if self.id.lower() != finding.id.lower():
            return False
        return not self.package or self.package.lower() == finding.package.lower()

    def active(self, today: dt.date) -> bool:
        return today <= self.expires

    def as_json(self) -> dict[str, Any]:
        data = {"id": self.id, "reason": self.reason, "expires": self.expires.isoformat()}
        return data | ({"package": self.package} if self.package else {})


_IGNORE_KEYS = {"id", "reason", "expires", "package"}


def parse_ignore(text: str, source: str = ".scanignore.toml") -> list[IgnoreEntry]:
    """The ignore file: ``[[ignore]]`` tables with ``id``, ``reason``, ``expires`` (a TOML date)
    and optionally ``package``. Anything missing or unknown is a config error naming the entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML ({exc})", hint="fix the file") from exc
    extra = sorted(set(data) - {"ignore"})
    if extra:
        raise ConfigError(f"{source}: unknown key {extra[0]!r}", hint="only [[ignore]] tables")
    raw = data.get("ignore", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: 'ignore' must be [[ignore]] tables")
    entries = []
    for number, item in enumerate(raw, start=1):
        entries.append(_ignore_entry(item, f"{source}: [[ignore]] #{number}"))
    return entries


def _ignore_entry(item: Any, where: str) -> IgnoreEntry:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: not a table")
    ident = item.get("id")
    if not isinstance(ident, str) or not ident.strip():
        raise ConfigError(f"{where}: missing id", hint='e.g. id = "CVE-2018-18074"')
    where = f"{where} ({ident})"
    unknown = sorted(set(item) - _IGNORE_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}", hint="use id, reason, expires, package"
        )
    reason = item.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ConfigError(f"{where}: missing reason", hint="say why it is acceptable")
    expires = item.get("expires")
    if isinstance(expires, str):
        try:
            expires = dt.date.fromisoformat(expires)
        except ValueError:
            expires = None
    if isinstance(expires, dt.datetime) or not isinstance(expires, dt.date):
        raise ConfigError(f"{where}: missing or invalid expires", hint="e.g. expires = 2027-01-31")
    package = item.get("package", "")
    if not isinstance(package, str):
        raise ConfigError(f"{where}: package must be a string")
    return IgnoreEntry(ident.strip(), reason.strip(), expires, package.strip())


def load_ignore(path: Path, *, must_exist: bool = False) -> list[IgnoreEntry]:
    """Read the ignore file; a missing default file ignores nothing, a missing named one is an
    error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(
                f"ignore file {path} does not exist", hint="fix --ignore-file"
            ) from None
        return []
    return parse_ignore(text, str(path))


# --- the gate ---


@dataclass(frozen=True)
class Ignored:
    finding: Finding
    entry: IgnoreEntry


@dataclass(frozen=True)
class Verdict:
    """One scanner's outcome under the policy."""

    scanner: str
    state: State
    required: bool
    findings: tuple[Finding, ...] = ()
    failing: tuple[Finding, ...] = ()
    ignored: tuple[Ignored, ...] = ()
    expired: tuple[Ignored, ...] = ()
    reason: str = ""
    tool: str = ""
    note: str = ""

    @property
    def blocks(self) -> bool:
        """Does this scanner fail the overall gate?"""
        return self.state == FAILED or (self.state == NOT_SCANNED and self.required)


def judge(
    runs: Sequence[ScannerRun],
    policy: Policy,
    ignores: Sequence[IgnoreEntry],
    today: dt.date,
) -> tuple[Verdict, ...]:
    """The verdict per scanner, in report order. A required scanner that was not run at all is
    "not scanned" too."""
    by_name = {r.scanner: r for r in runs}
    names = [s for s in SCANNERS if s in by_name or s in policy.require]
    names += [r.scanner for r in runs if r.scanner not in names]
    return tuple(
        _verdict(
            by_name.get(name) or ScannerRun.not_scanned(name, "not run"), policy, ignores, today
        )
        for name in names
    )


def _verdict(
    outcome: ScannerRun, policy: Policy, ignores: Sequence[IgnoreEntry], today: dt.date
) -> Verdict:
    required = outcome.scanner in policy.require
    if not outcome.ran:
        return Verdict(
            outcome.scanner, NOT_SCANNED, required, reason=outcome.reason, tool=outcome.tool
        )
    kept: list[Finding] = []
    ignored: list[Ignored] = []
    expired: list[Ignored] = []
    for finding in outcome.findings:
        matching = [e for e in ignores if e.matches(finding)]
        active = [e for e in matching if e.active(today)]
        if active:
            ignored.append(Ignored(finding, active[0]))
            continue
        expired += [Ignored(finding, e) for e in matching]
        kept.append(finding)
    failing = tuple(f for f in kept if policy.gates(f))
    return Verdict(
        outcome.scanner,
        FAILED if failing or outcome.reason else PASSED,
        required,
        findings=tuple(kept),
        failing=failing,
        ignored=tuple(ignored),
        expired=tuple(expired),
        reason=outcome.reason,
        tool=outcome.tool,
        note=outcome.note,
    )


# --- the result ---


# --- running the scanners ---


# --- platforms and references ---


def default_require(value: Any, *, ci: bool) -> str:
    """``require`` fails closed: missing or ``auto`` is ``vuln`` (a publish whose vulnerability
    scan did not run fails), and every scanner (``all``) in CI; anything else as given (``""``
    or ``none``: the explicit opt-out)."""
    if value is None or str(value).strip().lower() == "auto":
        return "all" if ci else "vuln"
    return str(value)


def scan_settings(extra: Mapping[str, Any], *, ci: bool = False) -> dict[str, Any]:
    """``[tool.pipeline.scan]`` (from ``Settings.extra``) with defaults: severity, ignore_unfixed,
    require (``default_require``; ``ci``: in GitHub Actions), ignore_file, output_dir, db_dir,
    db_update."""
    try:  # a table, or Invoke's proxy of one
        raw = dict(extra.get("scan") or {})
    except (TypeError, ValueError):
        raise ConfigError("[tool.pipeline.scan] must be a table") from None
    known = {
        "severity",
        "ignore_unfixed",
        "require",
        "ignore_file",
        "output_dir",
        "db_dir",
        "db_update",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"[tool.pipeline.scan] unknown key {unknown[0]!r}")
    return {
        "severity": raw.get("severity", "HIGH,CRITICAL"),
        "ignore_unfixed": parse_bool(
            raw.get("ignore_unfixed", True), "[tool.pipeline.scan] ignore_unfixed"
        ),
        "require": default_require(raw.get("require"), ci=ci),
        "ignore_file": str(raw.get("ignore_file", ".scanignore.toml")),
        "output_dir": str(raw.get("output_dir", "build/scan")),
        "db_dir": str(raw.get("db_dir", "")),
        "db_update": parse_bool(raw.get("db_update", True), "[tool.pipeline.scan] db_update"),
    }
