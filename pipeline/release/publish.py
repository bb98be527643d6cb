"""``docker.publish``: build, test, scan, push, sign, in that order, stopping at the first
failure (if test or scan fails, nothing is pushed). ``publish`` plans the run (tags, whether to
push, the signing key), wires the real steps (or the ones a test passes in), runs them, times
them and appends one line to the build history; ``text``, ``markdown`` and ``outputs`` render
the summary (terminal, step summary, ``$GITHUB_OUTPUT``) at the edge.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.build.record import BuildRecord
from pipeline.config import Settings
from pipeline.errors import UsageError
from pipeline.gitref import RefFlags
from pipeline.oci.reference import parse_reference
from pipeline.release.prune import Log
from pipeline.release.steps import Step, StepResult, Summary, plan_steps, run_steps, should_push
from pipeline.release.summary import scan_text

if TYPE_CHECKING:
    from pipeline.gitref import ReleaseContext
    from pipeline.oci.labels import ImageTags
    from pipeline.release.sign import SignConfig


# --- the whole run ---


@dataclass(frozen=True)
class PublishRequest:
    """The flags of ``docker.publish``; ``None`` means "from settings or the environment"."""

    push: bool = True
    sign: bool = True
    platform: tuple[str, ...] = ()
    severity: str | None = None
    require: str | None = None
    db_dir: str | None = None
    db_update: bool = True
    cache: str | None = None
    arm64: bool = True
    git: RefFlags = field(default_factory=RefFlags)


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
        run_steps(order, summary, log=log, clock=clock)
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
    ref = request.git.ref or environ.get("GITHUB_REF", "")
    if settings.tags.latest == "release" and ref.startswith("refs/tags/"):
        client = client_for(target.host, extra=settings.extra, environ=environ)
        released = client.tags(target.repository)
    context, computed = image_tags(
        environ,
        cwd,
        settings,
        request.git,
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
    return {
        "build": partial(_build_step, plan),
        "test": partial(_test_step, plan),
        "scan": partial(_scan_step, plan, summary),
        "push": partial(_push_step, plan),
        "sign": partial(_sign_step, plan),
    }


def _build_step(plan: PublishPlan) -> dict[str, Any]:
    from pipeline.build.plan import BuildOptions
    from pipeline.build.run import run_build

    options = BuildOptions(platforms=plan.request.platform, load=True, cache=plan.request.cache)
    result = run_build(
        root=plan.root,
        settings=plan.settings,
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


def _test_step(plan: PublishPlan) -> dict[str, Any]:
    from pipeline.build.containertest import run_checks

    checks = run_checks(
        BuildRecord.read(plan.record_path), arm64=plan.request.arm64, report=plan.log
    )
    return {"detail": f"{len(checks)} checks passed"}


def _scan_step(plan: PublishPlan, summary: Summary) -> dict[str, Any]:
    from pipeline.scan import policy as sc
    from pipeline.scan.result import read_result
    from pipeline.scan.run import ScanRequest, run_scan

    conf = sc.scan_settings(plan.settings.extra)
    document = Path(conf["output_dir"]) / "scan.json"
    document.unlink(missing_ok=True)
    scan_request = ScanRequest(
        severity=plan.request.severity,
        require=plan.request.require,
        db_dir=plan.request.db_dir,
        db_update=plan.request.db_update,
    )
    try:
        run_scan(
            scan_request,
            settings=plan.settings,
            environ=plan.environ,
            bin_dir=plan.bin_dir,
            log=plan.log,
        )
    finally:
        if document.exists():
            data = read_result(document)
            summary.scan = scan_text(data)
            summary.scan_counts = {
                str(k): int(v) for k, v in dict(data.get("counts") or {}).items()
            }
    return {"scan": summary.scan}


def _push_step(plan: PublishPlan) -> dict[str, Any]:
    from pipeline.release.push import push_record
    from pipeline.release.sign import sign

    rec = BuildRecord.read(plan.record_path)
    image = parse_reference(rec.image)

    def sign_first(digest: str) -> None:
        """Signed before any moving tag points at it."""
        if plan.request.sign:
            sign(image.with_digest(digest), plan.signing)
            plan.log(f"signed {image.with_digest(digest)} ({plan.signing.mode})")

    result = push_record(
        plan.record_path,
        extra=plan.settings.extra,
        environ=plan.environ,
        latest_policy=plan.settings.tags.latest,
        before_moving=sign_first,
        log=plan.log,
    )
    return {
        "digest": result.digest,
        "platforms": result.platforms,
        "tags": [f"{rec.image}:{t}" for t in result.tags],
        "pushed": True,
        "detail": f"{len(result.written)} tag(s) written",
    }


def _sign_step(plan: PublishPlan) -> dict[str, Any]:
    from pipeline.release.sign import require_signed

    rec = BuildRecord.read(plan.record_path)
    require_signed(parse_reference(rec.image).with_digest(rec.digest), plan.signing)
    return {"signed": f"verified ({plan.signing.mode})"}


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


def publish_and_report(
    request: PublishRequest,
    *,
    root: Path,
    settings: Settings,
    environ: Mapping[str, str],
    say: Callable[[str], None] = print,
) -> None:
    """``docker.publish``: the run, its summary printed and handed to GitHub, then the first
    failure raised (after the summary, so it is never lost)."""
    from pipeline.release.summary import github_report, text

    result = publish(request, root=root, settings=settings, environ=environ, cwd=Path.cwd())
    say(text(result))
    github_report(result, environ)
    if result.failure is not None:
        raise result.failure
