"""``docker.scan`` / ``docker.rescan`` (and publish's scan step) end to end: options in, scan,
reports out (terminal, files, GitHub step summary and outputs), then the gate.

Everything comes in as parameters: settings, the environment (``GITHUB_OUTPUT``,
``GITHUB_STEP_SUMMARY``, ``TRIVY_CACHE_DIR``), where the tools live and the flags.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import scan as sc
from pipeline.config import Settings
from pipeline.errors import UsageError
from pipeline.github import append_summary, write_outputs
from pipeline.record import BuildRecord
from pipeline.scanners import SCANNERS, Trivy

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


def tool(name: str, bin_dir: Path | None) -> str:
    """``bin_dir/name`` when it exists (the project's venv), else ``name`` on PATH."""
    if bin_dir is not None and (bin_dir / name).exists():
        return str(bin_dir / name)
    return name


def run_scan(
    request: ScanRequest,
    *,
    settings: Settings,
    environ: Mapping[str, str],
    bin_dir: Path | None = None,
    log: Log = print,
    now: dt.datetime | None = None,
) -> sc.ScanResult:
    """Scan, write the reports, print them, append the step summary, write outputs (format
    ``github``), then raise the gate's ``GateError`` if the image fails it."""
    if request.format not in FORMATS:
        raise UsageError(f"--format {request.format!r}: expected text, json or github")
    if request.format == "github" and not environ.get("GITHUB_OUTPUT"):
        raise UsageError("--format github: GITHUB_OUTPUT is not set")
    conf = sc.scan_settings(settings.extra)
    available = ("vuln", "secret", "config", "sbom") if request.remote else SCANNERS
    require = request.require if request.require is not None else conf["require"]
    policy = sc.Policy(
        severities=sc.parse_severities(request.severity or conf["severity"]),
        ignore_unfixed=request.ignore_unfixed and conf["ignore_unfixed"],
        require=sc.parse_require(require, available),
    )
    ignores = sc.load_ignore(
        Path(request.ignore_file or conf["ignore_file"]),
        must_exist=request.ignore_file is not None,
    )
    out = Path(request.output_dir or conf["output_dir"])
    trivy = Trivy(
        binary=tool("trivy", bin_dir),
        db_dir=request.db_dir or conf["db_dir"] or environ.get("TRIVY_CACHE_DIR", ""),
        db_update=request.db_update and conf["db_update"],
    )
    host = request.platform or sc.engine_platform()
    moment = now or dt.datetime.now(dt.UTC)
    common: dict[str, Any] = {
        "output_dir": out,
        "trivy": trivy,
        "ignores": ignores,
        "today": moment.date(),
        "now": moment.isoformat(timespec="seconds"),
    }
    if request.remote:
        digest, platforms = sc.resolve_remote(request.target)
        result = sc.scan_image(
            sc.by_digest(request.target, digest),
            policy,
            source="remote",
            insecure=sc.is_local_registry(request.target),
            digest=digest,
            platform=sc.pick_platform(platforms, host),
            **common,
        )
    else:
        record = BuildRecord.read(Path(settings.record))
        dockerfile = settings.dockerfile_path
        if not dockerfile.is_file():
            raise UsageError(
                f"no Dockerfile at {dockerfile}", hint="fix [tool.pipeline] dockerfile"
            )
        result = sc.scan_image(
            record.reference,
            policy,
            source="docker",
            digest=record.digest,
            platform=sc.pick_platform(record.platforms, host),
            dockerfile=dockerfile,
            dockerfile_label=settings.dockerfile,
            hadolint_bin=tool("hadolint", bin_dir),
            **common,
        )
    paths = sc.write_reports(result, out)
    summary = result.markdown()
    if request.format == "json":
        log(json.dumps(result.to_json(), indent=2))
    else:
        log(summary)
        log(f"reports: {paths['summary']}, {paths['json']}, {paths['sarif']}")
    if environ.get("GITHUB_STEP_SUMMARY"):
        append_summary(Path(environ["GITHUB_STEP_SUMMARY"]), summary)
    if request.format == "github":
        write_outputs(Path(environ["GITHUB_OUTPUT"]), sc.github_outputs(result, paths))
    failure = sc.gate_error(result)
    if failure is not None:
        raise failure
    return result
