"""The scanners behind ``docker.scan``: Trivy (vulnerabilities, secrets, misconfigurations, a
CycloneDX SBOM) and hadolint (the Dockerfile). Each is run as an argv list and its JSON parsed into
``Finding`` values; a scanner that could not run says so (``ScannerRun.ran`` is False, with the
reason) instead of returning an empty, "clean" list."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.engine.cli import DOCKER
from pipeline.errors import ScannerError
from pipeline.proc import run

SEVERITIES: tuple[str, ...] = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
"""Trivy's severities, lowest first."""

SCANNERS: tuple[str, ...] = ("vuln", "secret", "config", "dockerfile", "sbom")
"""Every scanner ``docker.scan`` knows, in report order."""

HADOLINT_SEVERITY: Mapping[str, str] = {
    "error": "HIGH",
    "warning": "MEDIUM",
    "info": "LOW",
    "style": "LOW",
}
"""hadolint levels on Trivy's scale, so one gate applies to both."""

# Trivy's fatal error when it has no usable vulnerability database: the first run with
# --skip-db-update ("cannot be specified on the first run") or a failed download.
_DB_ERROR = re.compile(
    r"DB error|--skip-db-update cannot be specified|failed to download vulnerability DB"
)

_NOISE = re.compile(r"^(Fatal error\s*)?(((run|init|DB|database) error):\s*)*")

_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT")

ImageSourceKind = Literal["local", "archive", "remote"]


@dataclass(frozen=True)
class Finding:
    """One problem a scanner reported. ``id`` is what an ignore entry matches: a CVE/GHSA id, a
    secret rule (``github-pat``), a Trivy check (``DS-0002``) or a hadolint rule (``DL3008``)."""

    scanner: str
    id: str
    severity: str
    title: str
    target: str = ""
    package: str = ""
    installed: str = ""
    fixed: str = ""
    line: int = 0
    url: str = ""

    @property
    def fixable(self) -> bool:
        """A fixed version exists (vulnerabilities only; other findings are fixed by editing)."""
        return bool(self.fixed)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "scanner": self.scanner,
            "id": self.id,
            "severity": self.severity,
            "title": self.title,
            "target": self.target,
        }
        if self.package:
            data |= {"package": self.package, "installed": self.installed, "fixed": self.fixed}
        if self.line:
            data["line"] = self.line
        if self.url:
            data["url"] = self.url
        return data


@dataclass(frozen=True)
class ScannerRun:
    """What one scanner did: ``ran`` with its findings, or not, with the reason. A ``reason`` on
    a scanner that ran means it failed whatever its findings (e.g. an empty SBOM)."""

    scanner: str
    ran: bool
    findings: tuple[Finding, ...] = ()
    reason: str = ""
    tool: str = ""
    note: str = ""

    @classmethod
    def not_scanned(cls, scanner: str, reason: str, tool: str = "") -> ScannerRun:
        return cls(scanner, False, (), reason, tool)


def severity_rank(severity: str) -> int:
    """Position on the scale; anything unknown ranks as UNKNOWN."""
    upper = severity.upper()
    return SEVERITIES.index(upper) if upper in SEVERITIES else 0


def _severity(value: Any) -> str:
    text = str(value or "UNKNOWN").upper()
    return text if text in SEVERITIES else "UNKNOWN"


# --- parsing ---


def parse_trivy(report: Mapping[str, Any]) -> dict[str, list[Finding]]:
    """Findings of a ``trivy image|config --format json`` report, by scanner (``vuln``, ``secret``,
    ``config``). A scanner with no results at all is absent from Trivy's report, so the caller
    decides from what it asked for whether an empty list means "ran, nothing found"."""
    found: dict[str, list[Finding]] = {"vuln": [], "secret": [], "config": []}
    for result in report.get("Results") or []:
        target = str(result.get("Target", ""))
        for vuln in result.get("Vulnerabilities") or []:
            found["vuln"].append(
                Finding(
                    scanner="vuln",
                    id=str(vuln.get("VulnerabilityID", "")),
                    severity=_severity(vuln.get("Severity")),
                    title=str(vuln.get("Title") or vuln.get("VulnerabilityID", "")),
                    target=str(vuln.get("PkgPath") or target),
                    package=str(vuln.get("PkgName", "")),
                    installed=str(vuln.get("InstalledVersion", "")),
                    fixed=str(vuln.get("FixedVersion") or ""),
                    url=str(vuln.get("PrimaryURL") or ""),
                )
            )
        for secret in result.get("Secrets") or []:
            found["secret"].append(
                Finding(
                    scanner="secret",
                    id=str(secret.get("RuleID", "")),
                    severity=_severity(secret.get("Severity")),
                    title=str(secret.get("Title") or secret.get("RuleID", "")),
                    target=target,
                    line=int(secret.get("StartLine") or 0),
                )
            )
        for misconf in result.get("Misconfigurations") or []:
            if str(misconf.get("Status", "FAIL")).upper() != "FAIL":
                continue
            cause = misconf.get("CauseMetadata") or {}
            found["config"].append(
                Finding(
                    scanner="config",
                    id=str(misconf.get("ID") or misconf.get("AVDID", "")),
                    severity=_severity(misconf.get("Severity")),
                    title=str(misconf.get("Title") or misconf.get("Message", "")),
                    target=target,
                    line=int(cause.get("StartLine") or 0),
                    url=str(misconf.get("PrimaryURL") or ""),
                )
            )
    return found


def parse_hadolint(items: Iterable[Mapping[str, Any]], path: str) -> list[Finding]:
    """``hadolint -f json`` output; ``path`` is how the report names the Dockerfile."""
    return [
        Finding(
            scanner="dockerfile",
            id=str(item.get("code", "")),
            severity=HADOLINT_SEVERITY.get(str(item.get("level", "")), "UNKNOWN"),
            title=str(item.get("message", "")).splitlines()[0] if item.get("message") else "",
            target=path,
            line=int(item.get("line") or 0),
            url=_hadolint_url(str(item.get("code", ""))),
        )
        for item in items
    ]


def _hadolint_url(code: str) -> str:
    if code.startswith("DL"):
        return f"https://github.com/hadolint/hadolint/wiki/{code}"
    if code.startswith("SC"):
        return f"https://www.shellcheck.net/wiki/{code}"
    return ""


def sbom_components(document: Mapping[str, Any]) -> int:
    """How many components a CycloneDX document lists."""
    return len(document.get("components") or [])


def is_db_error(stderr: str) -> bool:
    """Trivy failed because it has no usable vulnerability database (not scanned, not clean)."""
    return bool(_DB_ERROR.search(stderr))


def trivy_reason(stderr: str) -> str:
    """Trivy's fatal error (with its continuation lines) without the log noise, for a report."""
    lines = stderr.splitlines()
    for number, line in enumerate(lines):
        if "FATAL" in line:
            parts = [line.split("FATAL", 1)[1]]
            for more in lines[number + 1 :]:
                if _LOG_LINE.match(more):
                    break
                parts.append(more.strip().lstrip("*"))
            text = " ".join(" ".join(parts).split())
            return _NOISE.sub("", text)
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- running ---


@dataclass(frozen=True)
class ImageSource:
    """Where Trivy reads the image: the engine's local store (``local``), an image archive
    (``archive``: ``ref`` is the tar path) or a registry (``remote``, by digest)."""

    kind: ImageSourceKind
    ref: str
    platform: str = ""
    insecure: bool = False

    def args(self) -> list[str]:
        argv: list[str] = []
        if self.kind == "archive":
            argv += ["--input", self.ref]
        else:
            # Trivy names the local store after the engine.
            argv += ["--image-src", DOCKER if self.kind == "local" else self.kind]
        if self.platform:
            argv += ["--platform", self.platform]
        if self.insecure:
            argv += ["--insecure"]
        if self.kind != "archive":
            argv.append(self.ref)
        return argv


@dataclass(frozen=True)
class Trivy:
    """How to call Trivy: its binary, its cache (``db_dir``; the database is ``db_dir/db``) and
    whether it may update the database (real CI: yes; offline tests: no)."""

    binary: str = "trivy"
    db_dir: str = ""
    db_update: bool = True
    timeout_s: float = 900.0
    env: Mapping[str, str] | None = None

    def _cache(self) -> list[str]:
        return ["--cache-dir", self.db_dir] if self.db_dir else []

    def version(self) -> str:
        done = run([self.binary, "--version"], env=self.env, error=ScannerError, what="trivy")
        match = re.search(r"Version:\s*(\S+)", done.stdout)
        return match.group(1) if match else done.stdout.strip()

    def image_argv(
        self,
        source: ImageSource,
        scanners: Sequence[str],
        output: Path,
        image_config_scanners: Sequence[str] = (),
    ) -> list[str]:
        argv = [self.binary, "image", *self._cache(), "--quiet", "--format", "json"]
        argv += ["--output", str(output), "--timeout", f"{int(self.timeout_s)}s"]
        argv += ["--scanners", ",".join(scanners), "--list-all-pkgs"]
        if image_config_scanners:
            argv += ["--image-config-scanners", ",".join(image_config_scanners)]
        if "vuln" in scanners and not self.db_update:
            argv.append("--skip-db-update")
        if "misconfig" in image_config_scanners:
            argv.append("--skip-check-update")
        return argv + source.args()

    def image(
        self,
        source: ImageSource,
        scanners: Sequence[str],
        output: Path,
        image_config_scanners: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Run ``trivy image``; the JSON report. A missing database raises ``DatabaseMissing``."""
        argv = self.image_argv(source, scanners, output, image_config_scanners)
        try:
            run(
                argv,
                env=self.env,
                timeout=self.timeout_s + 60,
                error=ScannerError,
                what="trivy image",
            )
        except ScannerError as exc:
            if "vuln" in scanners and is_db_error(exc.stderr):
                raise DatabaseMissing(trivy_reason(exc.stderr)) from exc
            raise
        return _load_json(output)

    def config(self, dockerfile: Path, output: Path) -> dict[str, Any]:
        """``trivy config`` on one Dockerfile, with the checks built into Trivy."""
        argv = [self.binary, "config", *self._cache(), "--quiet", "--format", "json"]
        argv += ["--output", str(output), "--skip-check-update"]
        argv += ["--file-patterns", f"dockerfile:{re.escape(dockerfile.name)}"]
        argv.append(str(dockerfile))
        run(argv, env=self.env, timeout=self.timeout_s, error=ScannerError, what="trivy config")
        return _load_json(output)

    def cyclonedx(self, report: Path, output: Path) -> dict[str, Any]:
        """Convert a JSON report (with ``--list-all-pkgs``) into a CycloneDX SBOM."""
        argv = [self.binary, "convert", "--quiet", "--format", "cyclonedx"]
        argv += ["--output", str(output), str(report)]
        run(argv, env=self.env, timeout=self.timeout_s, error=ScannerError, what="trivy convert")
        return _load_json(output)


class DatabaseMissing(Exception):
    """Trivy has no usable vulnerability database; the message is Trivy's reason."""


def hadolint(dockerfile: Path, *, binary: str = "hadolint", report_path: str = "") -> list[Finding]:
    """Lint one Dockerfile. A file hadolint cannot read is a real error, not a clean result."""
    done = run(
        [binary, "--no-fail", "--no-color", "-f", "json", str(dockerfile)],
        error=ScannerError,
        what="hadolint",
        hint=f"check {dockerfile}",
    )
    try:
        items = json.loads(done.stdout or "[]")
    except json.JSONDecodeError as exc:
        raise ScannerError("hadolint printed invalid JSON", argv=[binary], stderr=str(exc)) from exc
    return parse_hadolint(items, report_path or str(dockerfile))


def hadolint_version(binary: str = "hadolint") -> str:
    done = run([binary, "--version"], error=ScannerError, what="hadolint")
    match = re.search(r"(\d+\.\d+\.\d+)", done.stdout)
    return match.group(1) if match else done.stdout.strip()


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ScannerError(f"unreadable scanner report {path}", stderr=str(exc)) from exc
    if not isinstance(data, dict):
        raise ScannerError(f"unexpected scanner report {path}: not a JSON object")
    return data
