"""``docker.publish``: build, test, scan, push, sign, in that order, stopping at the first
failure (if test or scan fails, nothing is pushed). ``publish`` plans the run (tags, whether to
push, the signing key), wires the real steps (or the ones a test passes in), runs them, times
them and appends one line to the build history; ``text``, ``markdown`` and ``outputs`` render
the summary (terminal, step summary, ``$GITHUB_OUTPUT``) at the edge.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Settings
from pipeline.errors import PipelineError, UsageError

if TYPE_CHECKING:
    from pipeline.gitref import ReleaseContext
    from pipeline.oci.labels import ImageTags
    from pipeline.release.sign import SignConfig

PULL_REQUEST_EVENTS = ("pull_request", "pull_request_target")
ORDER = ("build", "test", "scan", "push", "sign")
Log = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    """``run`` returns facts for the summary (e.g. ``{"digest": ...}``); raising stops the
    publish."""

    name: str
    run: Callable[[], Mapping[str, Any]]


@dataclass
class StepResult:
    name: str
    status: str  # ok, failed, skipped
    duration_s: float = 0.0
    detail: str = ""


@dataclass
class Summary:
    image: str = ""
    version: str = ""
    tags: list[str] = field(default_factory=list)
    digest: str = ""
    platforms: list[str] = field(default_factory=list)
    scan: str = ""
    signed: str = ""
    pushed: bool = False
    steps: list[StepResult] = field(default_factory=list)
    failure: PipelineError | None = None
    scan_counts: dict[str, int] | None = None  # for the history; None: not scanned

    @property
    def ok(self) -> bool:
        return self.failure is None and all(s.status != "failed" for s in self.steps)


def should_push(event: str, requested: bool | None) -> bool:
    """Pull request events never push; otherwise push unless ``--no-push``."""
    if event in PULL_REQUEST_EVENTS:
        if requested:
            raise UsageError(
                f"--push on a {event} event: pull requests never push",
                hint="drop --push, or publish from a branch or tag",
            )
        return False
    return True if requested is None else requested


def plan_steps(push: bool, sign: bool) -> tuple[str, ...]:
    """Which steps run: build, test and scan always; sign needs push."""
    steps = ["build", "test", "scan"]
    if push:
        steps.append("push")
        if sign:
            steps.append("sign")
    return tuple(steps)


def run(
    steps: Sequence[Step],
    summary: Summary,
    *,
    log: Log = print,
    clock: Callable[[], float] = time.monotonic,
) -> Summary:
    """Run the steps in order; the first failure is recorded in ``summary.failure`` and the
    rest are skipped (the caller prints the summary, then raises it)."""
    failure: PipelineError | None = None
    for step in steps:
        if failure is not None:
            summary.steps.append(StepResult(step.name, "skipped"))
            continue
        log(f"==> {step.name}")
        started = clock()
        try:
            facts = dict(step.run())
        except PipelineError as exc:
            summary.steps.append(
                StepResult(step.name, "failed", round(clock() - started, 2), exc.one_line())
            )
            failure = exc
            continue
        duration = round(clock() - started, 2)
        _absorb(summary, facts)
        summary.steps.append(StepResult(step.name, "ok", duration, str(facts.get("detail", ""))))
    summary.failure = failure
    return summary


def _absorb(summary: Summary, facts: Mapping[str, Any]) -> None:
    for key in ("image", "version", "digest", "scan", "signed"):
        if facts.get(key):
            setattr(summary, key, str(facts[key]))
    if facts.get("tags"):
        summary.tags = [str(t) for t in facts["tags"]]
    if facts.get("platforms"):
        summary.platforms = [str(p) for p in facts["platforms"]]
    if "pushed" in facts:
        summary.pushed = bool(facts["pushed"])


def text(summary: Summary) -> str:
    """The terminal summary; ``key=value`` lines first so scripts (and act tests) compare."""
    lines = [
        f"version={summary.version}",
        f"digest={summary.digest}",
        f"tags={','.join(summary.tags)}",
        f"platforms={','.join(summary.platforms)}",
        f"pushed={'true' if summary.pushed else 'false'}",
        f"scan={summary.scan}",
        f"signed={summary.signed}",
    ]
    for step in summary.steps:
        took = f" {step.duration_s:.1f}s" if step.status != "skipped" else ""
        detail = f" - {step.detail}" if step.detail else ""
        lines.append(f"  {step.name:<6} {step.status}{took}{detail}")
    return "\n".join(lines)


def markdown(summary: Summary) -> str:
    """The GitHub step summary."""
    status = "published" if summary.ok and summary.pushed else "built" if summary.ok else "failed"
    out = [f"## {summary.image or 'image'} {summary.version}: {status}", ""]
    out.append("| | |")
    out.append("|---|---|")
    out.append(f"| Digest | `{summary.digest or '-'}` |")
    out.append(f"| Platforms | {', '.join(summary.platforms) or '-'} |")
    out.append(f"| Scan | {_md(summary.scan) or '-'} |")
    out.append(f"| Signed | {_md(summary.signed) or '-'} |")
    out.append(f"| Tags | {'<br>'.join(f'`{t}`' for t in summary.tags) or '-'} |")
    out += ["", "| Step | Result | Duration |", "|---|---|---|"]
    for step in summary.steps:
        result = step.status + (f": {_md(step.detail)}" if step.detail else "")
        took = f"{step.duration_s:.1f}s" if step.status != "skipped" else "-"
        out.append(f"| {step.name} | {result} | {took} |")
    return "\n".join(out) + "\n"


def _md(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def scan_text(document: Mapping[str, Any]) -> str:
    """One line from a ``scan.json``: ``passed (CRITICAL 0, HIGH 2, ...)``; never "clean" when
    a scanner did not run."""
    result = str(document.get("result", "unknown"))
    found = ", ".join(f"{k} {v}" for k, v in (document.get("counts") or {}).items() if v)
    skipped = not_scanned(document)
    parts = [found] if found else ([] if skipped else ["no findings"])
    if skipped:
        parts.append(f"not scanned: {', '.join(skipped)}")
    return f"{result} ({'; '.join(parts)})"


def not_scanned(document: Mapping[str, Any]) -> list[str]:
    """The scanners of a ``scan.json`` that did not run."""
    return sorted(k for k, v in dict(document.get("states") or {}).items() if v == "not scanned")


def scan_counts(document: Mapping[str, Any]) -> dict[str, int] | None:
    """The counts a history entry keeps: None ("not scanned", never zeros) when a scanner did
    not run."""
    if not_scanned(document) or "counts" not in document:
        return None
    return {str(k): int(v) for k, v in dict(document["counts"]).items()}


def outputs(summary: Summary, summary_path: str = "") -> dict[str, str]:
    """Step outputs for ``$GITHUB_OUTPUT``."""
    return {
        "version": summary.version,
        "digest": summary.digest,
        "tags": "\n".join(summary.tags),
        "platforms": ",".join(summary.platforms),
        "pushed": "true" if summary.pushed else "false",
        "scan": summary.scan,
        "signed": summary.signed,
        "summary": summary_path,
    }


# --- the whole run ---


@dataclass(frozen=True)
class PublishRequest:
    """The flags of ``docker.publish``; ``None`` means "from settings or the environment"."""

    push: bool = True
    sign: bool = True
    platforms: tuple[str, ...] = ()
    severity: str | None = None
    require: str | None = None
    db_dir: str | None = None
    db_update: bool = True
    cache: str | None = None
    arm64: bool = True
    ref: str | None = None
    sha: str | None = None
    event: str | None = None
    pr: int | None = None


@dataclass(frozen=True)
class PublishPlan:
    """What the steps work from, decided before any of them runs."""

    request: PublishRequest
    root: Path
    settings: Settings
    environ: Mapping[str, str]
    context: ReleaseContext
    tags: ImageTags
    record_path: Path
    push: bool
    signing: SignConfig
    bin_dir: Path | None = None
    log: Log = print


StepFunction = Callable[[], Mapping[str, Any]]
StepFactory = Callable[[PublishPlan, Summary], Mapping[str, StepFunction]]


def publish(
    request: PublishRequest,
    *,
    root: Path,
    settings: Settings,
    environ: Mapping[str, str],
    cwd: Path,
    bin_dir: Path | None = None,
    log: Log = print,
    steps: StepFactory | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Summary:
    """Plan, run the steps (``real_steps`` unless a test passes others) and append one history
    line (success or failure). Bad input (a pull request asked to push, no signing key) raises
    ``UsageError`` before anything runs; a failing step is in ``summary.failure`` (the caller
    prints the summary, then raises it)."""
    plan = plan_publish(
        request,
        root=root,
        settings=settings,
        environ=environ,
        cwd=cwd,
        bin_dir=bin_dir,
        log=log,
    )
    summary = Summary(image=plan.tags.image, version=plan.tags.version, tags=list(plan.tags.tags))
    functions = (steps or real_steps)(plan, summary)
    order = [Step(name, functions[name]) for name in plan_steps(plan.push, request.sign)]
    try:
        run(order, summary, log=log, clock=clock)
    except Exception as exc:  # an unexpected error is still one (failed) run in the history
        _append_history(plan, summary, error=str(exc) or type(exc).__name__)
        raise
    if not plan.push:
        summary.steps.append(StepResult("push", "skipped", detail="not pushing"))
    _append_history(plan, summary)
    return summary


def plan_publish(
    request: PublishRequest,
    *,
    root: Path,
    settings: Settings,
    environ: Mapping[str, str],
    cwd: Path,
    bin_dir: Path | None = None,
    log: Log = print,
) -> PublishPlan:
    """Tags (with the released versions when a release may take ``latest``), whether to push,
    and the signing key; refuses to push unsigned unless ``sign`` is off."""
    from pipeline.oci.reference import parse_reference
    from pipeline.registry.client import client_for
    from pipeline.release.sign import config_from_env
    from pipeline.release.tags import image_tags

    target = parse_reference(settings.image)
    released: list[str] = []
    ref = request.ref or environ.get("GITHUB_REF", "")
    if settings.tags.latest == "release" and ref.startswith("refs/tags/"):
        client = client_for(target.host, extra=settings.extra, environ=environ)
        released = client.tags(target.repository)
    context, computed = image_tags(
        environ,
        cwd,
        settings,
        event=request.event,
        ref=request.ref,
        sha=request.sha,
        pr=int(request.pr) if request.pr is not None else None,
        released=released,
    )
    do_push = should_push(context.event, None if request.push else False)
    signing = config_from_env(environ)
    if do_push and request.sign and signing.mode == "none":
        raise UsageError(
            "publishing signs the image, but no signing key is set",
            hint="set COSIGN_KEY and COSIGN_PASSWORD (keyless needs Actions with "
            "`id-token: write`), or pass --no-sign",
        )
    return PublishPlan(
        request=request,
        root=root,
        settings=settings,
        environ=environ,
        context=context,
        tags=computed,
        record_path=root / settings.record,
        push=do_push,
        signing=signing,
        bin_dir=bin_dir,
        log=log,
    )


def real_steps(plan: PublishPlan, summary: Summary) -> dict[str, StepFunction]:
    """The steps against the engine, the scanners, the registry and cosign."""
    from pipeline.build.record import BuildRecord
    from pipeline.oci.reference import parse_reference

    request, s, log = plan.request, plan.settings, plan.log

    def build_step() -> dict[str, Any]:
        from pipeline.build.plan import BuildOptions, run_build

        options = BuildOptions(platforms=request.platforms, load=True, cache=request.cache)
        result = run_build(
            root=plan.root,
            settings=s,
            build_context=plan.context,
            tags=plan.tags,
            options=options,
            environ=plan.environ,
            record_path=plan.record_path,
        )
        rec = result.record
        return {
            "platforms": rec.platforms,
            "digest": rec.digest,
            "detail": f"{rec.cached_steps}/{rec.total_steps} steps cached",
        }

    def test_step() -> dict[str, Any]:
        from pipeline.build.containertest import run_checks

        checks = run_checks(BuildRecord.read(plan.record_path), arm64=request.arm64, report=log)
        return {"detail": f"{len(checks)} checks passed"}

    def scan_step() -> dict[str, Any]:
        from pipeline.scan import policy as sc
        from pipeline.scan.result import read_result
        from pipeline.scan.run import ScanRequest, run_scan

        conf = sc.scan_settings(s.extra)
        document = Path(conf["output_dir"]) / "scan.json"
        document.unlink(missing_ok=True)
        scan_request = ScanRequest(
            severity=request.severity,
            require=request.require,
            db_dir=request.db_dir,
            db_update=request.db_update,
        )
        try:
            run_scan(scan_request, settings=s, environ=plan.environ, bin_dir=plan.bin_dir, log=log)
        finally:
            if document.exists():
                data = read_result(document)
                summary.scan = scan_text(data)
                summary.scan_counts = scan_counts(data)
        return {"scan": summary.scan}

    def push_step() -> dict[str, Any]:
        from pipeline.release.push import push_record
        from pipeline.release.sign import sign

        rec = BuildRecord.read(plan.record_path)
        image = parse_reference(rec.image)

        def sign_first(digest: str) -> None:
            """Signed before any moving tag points at it."""
            if request.sign:
                sign(image.with_digest(digest), plan.signing)
                log(f"signed {image.with_digest(digest)} ({plan.signing.mode})")

        result = push_record(
            plan.record_path,
            extra=s.extra,
            environ=plan.environ,
            latest_policy=s.tags.latest,
            before_moving=sign_first,
            log=log,
        )
        return {
            "digest": result.digest,
            "platforms": result.platforms,
            "tags": [f"{rec.image}:{t}" for t in result.tags],
            "pushed": True,
            "detail": f"{len(result.written)} tag(s) written",
        }

    def sign_step() -> dict[str, Any]:
        from pipeline.release.sign import require_signed

        rec = BuildRecord.read(plan.record_path)
        require_signed(parse_reference(rec.image).with_digest(rec.digest), plan.signing)
        return {"signed": f"verified ({plan.signing.mode})"}

    return {
        "build": build_step,
        "test": test_step,
        "scan": scan_step,
        "push": push_step,
        "sign": sign_step,
    }


def _append_history(plan: PublishPlan, summary: Summary, *, error: str = "") -> None:
    """One line per run: from this run's build record when the build step succeeded, else
    from the planned tags (a stale record of an earlier run must not be reported)."""
    from pipeline.build.record import BuildRecord
    from pipeline.history.report import append_history, entry_from_record
    from pipeline.history.store import history_path, planned_entry

    ok = summary.ok and not error
    result = "success" if ok else "failure"
    if not error and summary.failure is not None:
        error = summary.failure.one_line()
    steps = {s.name: s.duration_s for s in summary.steps if s.status != "skipped"}
    built = any(s.name == "build" and s.status == "ok" for s in summary.steps)
    if built:
        entry = entry_from_record(
            BuildRecord.read(plan.record_path),
            result=result,
            kind="publish",
            steps=steps,
            scan=summary.scan_counts,
            error=error,
        )
    else:
        entry = planned_entry(
            plan.context, plan.tags, result=result, kind="publish", steps=steps, error=error
        )
    append_history(history_path(plan.root, plan.settings.extra), entry)
