"""``docker.rescan``: a pushed image, by the digest its tag holds now, every platform of its index.

The registry credentials (``REGISTRY_USERNAME``/``REGISTRY_PASSWORD``, or ``GITHUB_TOKEN`` for
ghcr.io) log docker in (a temporary DOCKER_CONFIG, ``pipeline.engine.login``) for the digest
lookup, and reach Trivy as ``TRIVY_USERNAME``/``TRIVY_PASSWORD`` in its environment, never
argv. An image the registry will not show is one line and a failure: "not scanned", never
clean.

Each platform gets its own verdict and reports (``OUT/<os>-<arch>/``; ``OUT/`` itself when one
platform is scanned, or ``--platform`` names one); ``OUT/scan.json`` and ``OUT/summary.md`` hold
them all, and the gate fails when any platform fails it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline import engine
from pipeline.engine.login import logged_in
from pipeline.errors import EngineError, GateError, RegistryError
from pipeline.github import append_summary, write_outputs
from pipeline.oci.platform import pick_platform
from pipeline.oci.reference import is_loopback, parse_reference
from pipeline.registry.auth import Credentials, credentials_for
from pipeline.registry.retry import RetryPolicy
from pipeline.scan.policy import ARTIFACTS, FAILED, NOT_SCANNED, PASSED, Policy
from pipeline.scan.report import markdown, write_reports
from pipeline.scan.result import SCHEMA, ScanResult, gate_error, severity_counts
from pipeline.scan.tools import SCANNERS, Trivy

Log = Callable[[str], None]
Scan = Callable[..., ScanResult]
_REFUSED = ("401", "403", "unauthorized", "denied", "forbidden")

# --- pure ---


def platforms_to_scan(index: Sequence[str], requested: str | None) -> list[str]:
    """Every image platform of the index, or the one ``--platform`` asks for (the index's
    first when it lacks it); ``[""]`` for a single-platform manifest (Trivy reads its own)."""
    if requested:
        return [pick_platform(list(index), requested)]
    return list(index) or [""]


def report_dir(out: Path, platform: str, several: bool) -> Path:
    return out / platform.replace("/", "-") if several and platform else out


def merged_states(results: Mapping[str, ScanResult]) -> dict[str, str]:
    """Per scanner over every platform: failed if any failed, else not scanned if any did not
    run, else passed."""
    merged: dict[str, str] = {}
    for scanner in SCANNERS:
        states = [r.states[scanner] for r in results.values() if scanner in r.states]
        if states:
            merged[scanner] = (
                FAILED if FAILED in states else NOT_SCANNED if NOT_SCANNED in states else PASSED
            )
    return merged


def combined(results: Mapping[str, ScanResult], reference: str, digest: str) -> dict[str, Any]:
    """``OUT/scan.json`` of a multi-platform rescan: the overall result and states, the counts
    over every platform, and each platform's own document."""
    passed = all(r.passed for r in results.values())
    findings = [f for r in results.values() for v in r.verdicts for f in v.findings]
    return {
        "schema": SCHEMA,
        "result": "passed" if passed else "failed",
        "passed": passed,
        "target": {"reference": reference, "digest": digest, "source": "remote"},
        "states": merged_states(results),
        "counts": severity_counts(findings),
        "platforms": {p: r.to_json() for p, r in results.items()},
    }


def worst(results: Mapping[str, ScanResult]) -> str:
    """The platform to show first: the first that fails the gate, else the first."""
    return next((p for p, r in results.items() if not r.passed), next(iter(results)))


def combined_gate(results: Mapping[str, ScanResult]) -> GateError | None:
    """One line for every platform that fails the gate."""
    failures = [(p, e) for p, r in results.items() if (e := gate_error(r)) is not None]
    if not failures:
        return None
    prefix = "image scan failed: "
    parts = [f"{p or 'image'}: {e.message.removeprefix(prefix)}" for p, e in failures]
    return GateError(prefix + "; ".join(parts), hint=failures[0][1].hint)


def lookup_error(target: str, exc: EngineError, logged_in: bool) -> RegistryError:
    """The registry would not show the image: one line, and it is not scanned."""
    text = f"{exc.message} {exc.stderr}".lower()
    if not any(word in text for word in _REFUSED):
        return RegistryError(exc.message, stderr=exc.stderr, hint=exc.hint)
    return RegistryError(
        f"{target}: the registry refused to show it (unauthorized): not scanned",
        hint="check that the credentials may read the package"
        if logged_in
        else "set REGISTRY_USERNAME/REGISTRY_PASSWORD (or GITHUB_TOKEN for ghcr.io)",
    )


# --- running ---


def rescan(
    target: str,
    policy: Policy,
    common: dict[str, Any],
    *,
    platform: str | None,
    environ: Mapping[str, str],
    retry: RetryPolicy,
    scan: Scan,
) -> tuple[dict[str, ScanResult], dict[str, dict[str, Path]], str, str]:
    """Log in, look the digest up, scan each platform: (results, report paths, pinned
    reference, digest) by platform."""
    ref = parse_reference(target)
    out: Path = common["output_dir"]
    for name in ARTIFACTS.values():  # nothing stale may say "passed"
        (out / name).unlink(missing_ok=True)
    credentials = credentials_for(ref.host, environ)
    with logged_in(ref.host, credentials, retry=retry, environ=environ) as client:
        try:
            digest, index = engine.remote_digest(target, client)
        except EngineError as exc:
            raise lookup_error(target, exc, credentials is not None) from None
    pinned = str(ref.with_digest(digest))
    options = {**common, "trivy": trivy_with(common["trivy"], credentials, environ)}
    chosen = platforms_to_scan(index, platform)
    results: dict[str, ScanResult] = {}
    paths: dict[str, dict[str, Path]] = {}
    for each in chosen:
        where = report_dir(out, each, len(chosen) > 1)
        options["output_dir"] = where
        results[each] = scan(
            pinned,
            policy,
            source="remote",
            insecure=is_loopback(ref.host),
            digest=digest,
            platform=each,
            **options,
        )
        paths[each] = write_reports(results[each], where)
    return results, paths, pinned, digest


def trivy_with(trivy: Trivy, credentials: Credentials | None, environ: Mapping[str, str]) -> Trivy:
    """Trivy with the registry credentials in its environment (never argv)."""
    if credentials is None:
        return trivy
    env = {**environ, "TRIVY_USERNAME": credentials.username}
    env["TRIVY_PASSWORD"] = credentials.password
    return replace(trivy, env=env)


def report_all(
    results: Mapping[str, ScanResult],
    paths: Mapping[str, Mapping[str, Path]],
    out: Path,
    reference: str,
    digest: str,
    *,
    format: str,
    environ: Mapping[str, str],
    log: Log,
) -> None:
    """Every platform's summary, then ``OUT/scan.json`` and ``OUT/summary.md`` for them all."""
    document = combined(results, reference, digest)
    summary = "\n".join(markdown(r) for r in results.values())
    (out / ARTIFACTS["json"]).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    (out / ARTIFACTS["summary"]).write_text(summary, encoding="utf-8")
    if format == "json":
        log(json.dumps(document, indent=2))
    else:
        log(summary)
        for platform, where in paths.items():
            log(f"reports ({platform}): {where['summary']}, {where['json']}, {where['sarif']}")
    if environ.get("GITHUB_STEP_SUMMARY"):
        append_summary(Path(environ["GITHUB_STEP_SUMMARY"]), summary)
    if format == "github":
        write_outputs(
            Path(environ["GITHUB_OUTPUT"]),
            {
                "result": str(document["result"]),
                "platforms": ",".join(results),
                "sarif": str(paths[worst(results)]["sarif"]),
                "sarif_files": "\n".join(str(p["sarif"]) for p in paths.values()),
                "summary": str(out / ARTIFACTS["summary"]),
                "json": str(out / ARTIFACTS["json"]),
                "states": json.dumps(document["states"]),
            },
        )
