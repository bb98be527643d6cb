"""``docker.scan`` / ``docker.rescan`` (and publish's scan step) end to end: options in, scan,
reports out (terminal, files, GitHub step summary and outputs), then the gate.

Everything comes in as parameters: settings, the environment (``GITHUB_OUTPUT``,
``GITHUB_STEP_SUMMARY``, ``TRIVY_CACHE_DIR``), where the tools live and the flags.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pipeline import engine
from pipeline.build.record import BuildRecord
from pipeline.clock import utc_stamp
from pipeline.config import Settings
from pipeline.errors import ScannerError, UsageError
from pipeline.github import report_to_github
from pipeline.oci.platform import pick_platform
from pipeline.oci.reference import is_loopback, parse_reference
from pipeline.proc import find_tool
from pipeline.scan import policy as sc
from pipeline.scan.policy import ARTIFACTS, IgnoreEntry, Policy, judge
from pipeline.scan.report import github_outputs, markdown, write_reports
from pipeline.scan.result import ScanResult, Target, gate_error
from pipeline.scan.tools import (
    SCANNERS,
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

FORMATS = ("text", "json", "github")
Log = Callable[[str], None]


@dataclass(frozen=True)
class ScanRequest:
    """The flags of ``docker.scan`` / ``docker.rescan``; ``None`` means "from settings".
    ``remote`` scans ``target`` (a pushed reference) by digest; otherwise the build record."""

    target: str = ""
    remote: bool = False
    severity: str | None = None
    ignore_unfixed: bool = True
    require: str | None = None
    ignore_file: str | None = None
    output_dir: str | None = None
    db_dir: str | None = None
    db_update: bool = True
    platform: str | None = None
    format: str = "text"


def run_scan(
    request: ScanRequest,
    *,
    settings: Settings,
    environ: Mapping[str, str],
    bin_dir: Path | None = None,
    log: Log = print,
    now: dt.datetime | None = None,
) -> ScanResult:
    """Scan, write the reports, print them, append the step summary, write outputs (format
    ``github``), then raise the gate's ``GateError`` if the image fails it."""
    if request.format not in FORMATS:
        raise UsageError(f"--format {request.format!r}: expected text, json or github")
    if request.format == "github" and not environ.get("GITHUB_OUTPUT"):
        raise UsageError("--format github: GITHUB_OUTPUT is not set")
    conf = sc.scan_settings(settings.extra)
    out = Path(request.output_dir or conf["output_dir"])
    moment = now or dt.datetime.now(dt.UTC)
    common: dict[str, Any] = {
        "output_dir": out,
        "trivy": Trivy(
            binary=find_tool("trivy", bin_dir),
            db_dir=request.db_dir or conf["db_dir"] or environ.get("TRIVY_CACHE_DIR", ""),
            db_update=request.db_update and conf["db_update"],
        ),
        "ignores": sc.load_ignore(
            Path(request.ignore_file or conf["ignore_file"]),
            must_exist=request.ignore_file is not None,
        ),
        "today": moment.date(),
        "now": utc_stamp(moment),
    }
    host = request.platform or engine.daemon_info().platform
    policy = scan_policy(request, conf)
    if request.remote:
        result = _scan_remote(request.target, policy, host, common)
    else:
        result = _scan_built(settings, policy, host, find_tool("hadolint", bin_dir), common)
    _report(result, write_reports(result, out), request.format, environ, log)
    failure = gate_error(result)
    if failure is not None:
        raise failure
    return result


def scan_policy(request: ScanRequest, conf: Mapping[str, Any]) -> Policy:
    """The gate: flags over ``[tool.pipeline.scan]``; a remote image has no Dockerfile."""
    available = ("vuln", "secret", "config", "sbom") if request.remote else SCANNERS
    require = request.require if request.require is not None else conf["require"]
    return sc.Policy(
        severities=sc.parse_severities(request.severity or conf["severity"]),
        ignore_unfixed=request.ignore_unfixed and conf["ignore_unfixed"],
        require=sc.parse_require(require, available),
    )


def _scan_remote(target: str, policy: Policy, host: str, common: dict[str, Any]) -> ScanResult:
    """A pushed image, by the digest its tag holds now."""
    digest, platforms = engine.remote_digest(target)
    pinned = parse_reference(target).with_digest(digest)
    return scan_image(
        str(pinned),
        policy,
        source="remote",
        insecure=is_loopback(pinned.host),
        digest=digest,
        platform=pick_platform(platforms, host),
        **common,
    )


def _scan_built(
    settings: Settings, policy: Policy, host: str, hadolint_bin: str, common: dict[str, Any]
) -> ScanResult:
    """The image of the build record, in the local store, with its Dockerfile."""
    record = BuildRecord.read(Path(settings.record))
    dockerfile = settings.dockerfile_path
    if not dockerfile.is_file():
        raise UsageError(f"no Dockerfile at {dockerfile}", hint="fix [tool.pipeline] dockerfile")
    return scan_image(
        record.reference,
        policy,
        source="local",
        digest=record.digest,
        platform=pick_platform(record.platforms, host),
        dockerfile=dockerfile,
        dockerfile_label=settings.dockerfile,
        hadolint_bin=hadolint_bin,
        **common,
    )


def _report(
    result: ScanResult,
    paths: Mapping[str, Path],
    format: str,
    environ: Mapping[str, str],
    log: Log,
) -> None:
    summary = markdown(result)
    if format == "json":
        log(json.dumps(result.to_json(), indent=2))
    else:
        log(summary)
        log(f"reports: {paths['summary']}, {paths['json']}, {paths['sarif']}")
    outputs = github_outputs(result, paths) if format == "github" else None
    report_to_github(environ, outputs=outputs, summary=summary)


def scan_image(
    ref: str,
    policy: Policy,
    *,
    output_dir: Path,
    trivy: Trivy,
    ignores: Sequence[IgnoreEntry] = (),
    today: dt.date,
    platform: str = "",
    source: Literal["local", "remote"] = "local",
    insecure: bool = False,
    digest: str = "",
    dockerfile: Path | None = None,
    dockerfile_label: str = "",
    hadolint_bin: str = "hadolint",
    now: str = "",
) -> ScanResult:
    """Scan one image (``ref``: a local image for ``source="local"``, ``repo@sha256:...`` for
    ``"remote"``) and judge it. With a ``dockerfile`` the config and dockerfile scanners lint it;
    without one the config scanner checks the image's own configuration and there is no
    dockerfile scanner. Raw reports and the SBOM land in ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: output_dir / name for key, name in ARTIFACTS.items()}
    for stale in paths.values():  # a failed scan must not leave an older result behind
        stale.unlink(missing_ok=True)
    image = ImageSource(source, ref, platform=platform, insecure=insecure)
    tools = {"trivy": trivy.version()}
    runs, metadata = _image_runs(trivy, image, paths, config_in_image=dockerfile is None)
    scanned = _report_platform(metadata)
    if platform and scanned and scanned != platform:
        # The Docker source serves the daemon's platform whatever --platform says.
        raise ScannerError(
            f"asked to scan {platform} of {ref} but Trivy read {scanned}",
            hint="scan another platform with `invoke docker.rescan` on the pushed image",
        )
    if dockerfile is not None:
        label = dockerfile_label or str(dockerfile)
        config = trivy.config(dockerfile, paths["trivy_config"])
        misconfigs = [_relabel(f, label) for f in parse_trivy(config)["config"]]
        runs[2] = ScannerRun("config", True, tuple(misconfigs), tool="trivy")
        tools["hadolint"] = hadolint_version(hadolint_bin)
        lint = hadolint(dockerfile, binary=hadolint_bin, report_path=label)
        runs.append(ScannerRun("dockerfile", True, tuple(lint), tool="hadolint"))
    target = Target(
        reference=ref,
        digest=digest or parse_reference(ref).digest,
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


def _image_runs(
    trivy: Trivy, image: ImageSource, paths: Mapping[str, Path], *, config_in_image: bool
) -> tuple[list[ScannerRun], Mapping[str, Any]]:
    """Trivy on the image: vuln (``not scanned`` without a database), secret, config (the
    image's own, replaced by the Dockerfile's when there is one) and the SBOM; with the
    report's metadata."""
    extra = ["secret"] + (["misconfig"] if config_in_image else [])
    try:
        report = trivy.image(image, ["vuln", "secret"], paths["trivy_image"], extra)
        vuln_missing = ""
    except DatabaseMissing as exc:
        vuln_missing = f"no vulnerability database ({exc})"
        report = trivy.image(image, ["secret"], paths["trivy_image"], extra)
    found = parse_trivy(report)
    vuln = (
        ScannerRun.not_scanned("vuln", vuln_missing, "trivy")
        if vuln_missing
        else ScannerRun("vuln", True, tuple(found["vuln"]), tool="trivy")
    )
    components = sbom_components(trivy.cyclonedx(paths["trivy_image"], paths["sbom"]))
    sbom = ScannerRun(
        "sbom",
        True,
        reason="" if components else "the SBOM lists no components",
        tool="trivy",
        note=f"CycloneDX, {components} components: {ARTIFACTS['sbom']}",
    )
    runs = [
        vuln,
        ScannerRun("secret", True, tuple(found["secret"]), tool="trivy"),
        ScannerRun("config", True, tuple(found["config"]), tool="trivy"),
        sbom,
    ]
    return runs, report.get("Metadata") or {}


def _relabel(finding: Finding, target: str) -> Finding:
    return replace(finding, target=target)


def _report_platform(metadata: Mapping[str, Any]) -> str:
    config = metadata.get("ImageConfig") or {}
    os_, arch = config.get("os"), config.get("architecture")
    if not os_ or not arch:
        return ""
    variant = config.get("variant")
    return f"{os_}/{arch}" + (f"/{variant}" if variant else "")
