"""``docker.scan`` and ``docker.rescan``: scan an image, then judge the findings.

The gate is pure: scanner runs + policy + ignore entries + today's date give a verdict per scanner
and overall. Every scanner ends in one of three states: ``passed``, ``failed`` or ``not scanned``
(it could not run, e.g. no vulnerability database). "Not scanned" is never shown as clean, and it
fails the gate for a scanner the policy requires."""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pipeline.config import parse_bool
from pipeline.errors import (
    ConfigError,
    EngineError,
    GateError,
    RegistryError,
    ScannerError,
    UsageError,
)
from pipeline.proc import run
from pipeline.scanners import (
    SCANNERS,
    SEVERITIES,
    DatabaseMissing,
    Finding,
    ImageSource,
    ScannerRun,
    Trivy,
    hadolint,
    hadolint_version,
    parse_trivy,
    sbom_components,
)

State = Literal["passed", "failed", "not scanned"]
PASSED: State = "passed"
FAILED: State = "failed"
NOT_SCANNED: State = "not scanned"

SCHEMA = 1
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

    def markdown(self) -> str:
        from pipeline.scanreport import markdown

        return markdown(self)

    def sarif(self) -> dict[str, Any]:
        from pipeline.scanreport import sarif

        return sarif(self)


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


# --- running the scanners ---


def scan_image(
    ref: str,
    policy: Policy,
    *,
    output_dir: Path,
    trivy: Trivy,
    ignores: Sequence[IgnoreEntry] = (),
    today: dt.date,
    platform: str = "",
    source: Literal["docker", "remote"] = "docker",
    insecure: bool = False,
    digest: str = "",
    dockerfile: Path | None = None,
    dockerfile_label: str = "",
    hadolint_bin: str = "hadolint",
    now: str = "",
) -> ScanResult:
    """Scan one image (``ref``: a local image for ``source="docker"``, ``repo@sha256:...`` for
    ``"remote"``) and judge it. With a ``dockerfile`` the config and dockerfile scanners lint it;
    without one the config scanner checks the image's own configuration and there is no
    dockerfile scanner. Raw reports and the SBOM land in ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: output_dir / name for key, name in ARTIFACTS.items()}
    for stale in paths.values():  # a failed scan must not leave an older result behind
        stale.unlink(missing_ok=True)
    image = ImageSource(source, ref, platform=platform, insecure=insecure)
    tools = {"trivy": trivy.version()}
    runs: list[ScannerRun] = []

    config_in_image = ["secret"] + ([] if dockerfile else ["misconfig"])
    try:
        report = trivy.image(image, ["vuln", "secret"], paths["trivy_image"], config_in_image)
        vuln_missing = ""
    except DatabaseMissing as exc:
        vuln_missing = f"no vulnerability database ({exc})"
        report = trivy.image(image, ["secret"], paths["trivy_image"], config_in_image)
    metadata = report.get("Metadata") or {}
    scanned = _report_platform(metadata)
    if platform and scanned and scanned != platform:
        # The Docker source serves the daemon's platform whatever --platform says.
        raise ScannerError(
            f"asked to scan {platform} of {ref} but Trivy read {scanned}",
            hint="scan another platform with `invoke docker.rescan` on the pushed image",
        )
    found = parse_trivy(report)
    if vuln_missing:
        runs.append(ScannerRun.not_scanned("vuln", vuln_missing, "trivy"))
    else:
        runs.append(ScannerRun("vuln", True, tuple(found["vuln"]), tool="trivy"))
    runs.append(ScannerRun("secret", True, tuple(found["secret"]), tool="trivy"))

    if dockerfile is not None:
        label = dockerfile_label or str(dockerfile)
        config = trivy.config(dockerfile, paths["trivy_config"])
        misconfigs = [_relabel(f, label) for f in parse_trivy(config)["config"]]
        runs.append(ScannerRun("config", True, tuple(misconfigs), tool="trivy"))
    else:
        runs.append(ScannerRun("config", True, tuple(found["config"]), tool="trivy"))

    sbom = trivy.cyclonedx(paths["trivy_image"], paths["sbom"])
    components = sbom_components(sbom)
    runs.append(
        ScannerRun(
            "sbom",
            True,
            reason="" if components else "the SBOM lists no components",
            tool="trivy",
            note=f"CycloneDX, {components} components: {ARTIFACTS['sbom']}",
        )
    )

    if dockerfile is not None:
        label = dockerfile_label or str(dockerfile)
        tools["hadolint"] = hadolint_version(hadolint_bin)
        lint = hadolint(dockerfile, binary=hadolint_bin, report_path=label)
        runs.append(ScannerRun("dockerfile", True, tuple(lint), tool="hadolint"))

    target = Target(
        reference=ref,
        digest=digest or (ref.split("@", 1)[1] if "@sha256:" in ref else ""),
        platform=scanned or platform,
        image_id=str(metadata.get("ImageID", "")),
        source=source,
        dockerfile=(dockerfile_label or str(dockerfile)) if dockerfile is not None else "",
    )
    artifacts = {k: str(p) for k, p in paths.items() if k in ("summary", "json", "sarif", "sbom")}
    return ScanResult(
        target=target,
        policy=policy,
        verdicts=judge(runs, policy, ignores, today),
        scanned_at=now,
        tools=tools,
        artifacts=artifacts,
    )


def _relabel(finding: Finding, target: str) -> Finding:
    return replace(finding, target=target)


def _report_platform(metadata: Mapping[str, Any]) -> str:
    config = metadata.get("ImageConfig") or {}
    os_, arch = config.get("os"), config.get("architecture")
    if not os_ or not arch:
        return ""
    variant = config.get("variant")
    return f"{os_}/{arch}" + (f"/{variant}" if variant else "")


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
    if any(v.state == NOT_SCANNED for v in blocking):
        hints.append(
            "make the scanner run (e.g. --db-dir with a Trivy database) or drop it from --require"
        )
    return GateError(f"image scan failed: {'; '.join(parts)}", hint="; ".join(hints))


def write_reports(result: ScanResult, output_dir: Path) -> dict[str, Path]:
    """Write summary.md, scan.json and scan.sarif (the SBOM is already there)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: output_dir / ARTIFACTS[k] for k in ("summary", "json", "sarif")}
    _atomic(paths["summary"], result.markdown())
    _atomic(paths["json"], json.dumps(result.to_json(), indent=2) + "\n")
    _atomic(paths["sarif"], json.dumps(result.sarif(), indent=2) + "\n")
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


# --- platforms and references ---


_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def normalize_platform(os_: str, arch: str) -> str:
    """``linux``/``x86_64`` (as ``docker version`` reports the daemon) as ``linux/amd64``."""
    return f"{os_.lower()}/{_ARCHES.get(arch.lower(), arch.lower())}"


def pick_platform(platforms: Sequence[str], host: str) -> str:
    """The platform to scan: the host's when the image has it, else the image's first one."""
    if not platforms or host in platforms:
        return host
    return platforms[0]


def by_digest(ref: str, digest: str) -> str:
    """``repo:tag`` (or ``repo@...``) and a digest as ``repo@sha256:...``."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return f"{name}@{digest}"


def is_local_registry(ref: str) -> bool:
    """Registries on the loopback address speak plain HTTP (as Docker assumes)."""
    host = ref.split("/", 1)[0] if "/" in ref else ""
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return hostname in ("localhost", "127.0.0.1", "[::1]") or hostname.startswith("127.")


def engine_platform() -> str:
    """The Docker daemon's platform (what a plain ``docker run`` would use)."""
    done = run(
        ["docker", "version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"],
        error=EngineError,
        what="docker version",
        hint="is the Docker daemon running?",
    )
    os_, _, arch = done.stdout.strip().partition("/")
    return normalize_platform(os_, arch)


def resolve_remote(ref: str) -> tuple[str, tuple[str, ...]]:
    """A pushed image's digest (of its index or manifest) and the platforms an index lists."""
    done = run(
        ["docker", "buildx", "imagetools", "inspect", ref, "--format", "{{json .Manifest}}"],
        error=RegistryError,
        what=f"resolving {ref}",
        hint="is the image pushed and the registry reachable?",
    )
    return parse_manifest(done.stdout)


def parse_manifest(text: str) -> tuple[str, tuple[str, ...]]:
    """``imagetools inspect --format '{{json .Manifest}}'``: (digest, platforms of an index)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError("unexpected manifest from the registry", stderr=str(exc)) from exc
    digest = str(data.get("digest", ""))
    if not digest.startswith("sha256:"):
        raise RegistryError("the registry returned no digest", stderr=text)
    platforms = []
    for item in data.get("manifests") or []:
        plat = item.get("platform") or {}
        if not plat.get("os") or plat.get("os") == "unknown":
            continue  # attestation manifests
        name = f"{plat['os']}/{plat.get('architecture', '')}"
        platforms.append(name + (f"/{plat['variant']}" if plat.get("variant") else ""))
    return digest, tuple(platforms)


def scan_settings(extra: Mapping[str, Any]) -> dict[str, Any]:
    """``[tool.pipeline.scan]`` (from ``Settings.extra``) with defaults: severity, ignore_unfixed,
    require, ignore_file, output_dir, db_dir, db_update."""
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
        "require": raw.get("require", ""),
        "ignore_file": str(raw.get("ignore_file", ".scanignore.toml")),
        "output_dir": str(raw.get("output_dir", "build/scan")),
        "db_dir": str(raw.get("db_dir", "")),
        "db_update": parse_bool(raw.get("db_update", True), "[tool.pipeline.scan] db_update"),
    }
