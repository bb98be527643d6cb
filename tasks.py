"""The Invoke namespace: each task reads its flags, builds one request (the git flags as one
``RefFlags``), calls one ``pipeline`` function and prints what it returns; errors become one
line at one edge (``Command``). Heavy libraries are imported inside tasks, so `invoke --list` and
`invoke docker.tags` stay fast. Flag help: ``pipeline.flags``; settings: ``[tool.pipeline]``
through Invoke's config layers (``INVOKE_DOCKER_IMAGE=...`` or a flag overrides them)."""

from __future__ import annotations

import functools
import gc
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.collection import Collection
from invoke.config import Config
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task, task

# Invoke turns bytecode writing off before it loads this file (its --write-pyc flag, off by
# default) to keep a tasks.pyc out of the tree. ``pipeline`` is an ordinary library and should be
# cached like one, or every `invoke` run recompiles it from source (~15 ms for docker.tags):
# restore Python's own setting before importing it. PYTHONDONTWRITEBYTECODE and -B are still
# honoured, and so is `invoke --write-pyc`.
sys.dont_write_bytecode = sys.dont_write_bytecode and bool(sys.flags.dont_write_bytecode)

from pipeline import flags as flags_help  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.project import invoke_defaults, load_pyproject  # noqa: E402

if TYPE_CHECKING:
    from pipeline.config import Settings

ROOT = Path(__file__).resolve().parent
GIT_FLAGS = ("event", "ref", "sha", "pr", "default_branch")


# --- the edge ---


class Command(Task[Callable[..., None]]):
    """A task at the edge: typed pipeline errors become one actionable line and their exit
    code, with no traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except PipelineError as exc:
            raise Exit(f"error: {exc.one_line()}", code=exc.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None


command = functools.partial(task, klass=Command)


def settings(c: Context, **overrides: Any) -> Settings:
    """Validated settings from Invoke's config layers, then flags; paths from the project root."""
    from pipeline.config import load_settings

    return load_settings(c.config.docker, ROOT, overrides)


def flags(values: dict[str, Any], *drop: str) -> dict[str, Any]:
    """A task's flags as a request's fields: the context, ``drop`` and unset flags left out
    (the request's defaults stand), lists as tuples, the git flags as one ``RefFlags``."""
    out: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    out = {k: v for k, v in out.items() if v is not None and not callable(v)}
    out = {k: v for k, v in out.items() if k != "c" and k not in drop}
    git = {k: out.pop(k) for k in GIT_FLAGS if k in out}
    if not git:
        return out
    from pipeline.gitref import RefFlags

    return {**out, "git": RefFlags.of(**git)}


def say(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)


def project_config(system_prefix: str | None = None) -> Config:
    """Invoke's config for this project, layered as the `invoke` program layers it: this
    collection's defaults (``[tool.pipeline]``), ``/etc/invoke.yaml`` (``system_prefix``),
    ``~/.invoke.yaml``, the project's ``invoke.yaml``, then ``INVOKE_*`` variables. Tests read
    settings through it."""
    config = Config(project_location=ROOT, system_prefix=system_prefix)
    config.load_project()
    config.load_collection(ns.configuration())
    config.load_shell_env()
    return config


# --- docker: tags, build, test, merge ---


@command(help=flags_help.TAGS, iterable=["released"])
def tags(
    c: Context,
    ref: str | None = None,
    sha: str | None = None,
    event: str | None = None,
    pr: int | None = None,
    default_branch: str | None = None,
    image: str | None = None,
    released: list[str] | None = None,
    format: str = "text",
) -> None:
    """Print the image tags, version and OCI labels for this commit or the given ref."""
    from pipeline.gitref import RefFlags
    from pipeline.release.tags import image_tags, tag_lines

    git = RefFlags.of(event, ref, sha, pr, default_branch)
    _, result = image_tags(os.environ, Path.cwd(), settings(c, image=image), git, released or ())
    say(tag_lines(result, format, os.environ))


@command(name="build", help=flags_help.BUILD, iterable=["platform", "build_arg"])
def docker_build(
    c: Context,
    platform: list[str] | None = None,
    push: bool = False,
    load: bool = False,
    cache: str | None = None,
    builder: str | None = None,
    target: str | None = None,
    build_arg: list[str] | None = None,
    progress: str = "auto",
    no_cache: bool = False,
    ref: str | None = None,
    sha: str | None = None,
    event: str | None = None,
    pr: int | None = None,
    image: str | None = None,
    push_by_digest: bool = False,
) -> None:
    """Build the image with buildx (tags and labels of docker.tags) and write build/image.toml."""
    from pipeline.release.build import BuildRequest, build_image

    request = BuildRequest(**flags(locals(), "image"))
    say(build_image(request, root=ROOT, settings=settings(c, image=image), environ=os.environ))


@command(name="test", help=flags_help.DOCKER_TEST)
def docker_test(c: Context, record: str | None = None, arm64: bool = True) -> None:
    """Run the built image (from the build record) and check it against real containers."""
    from pipeline.build.containertest import run_record

    run_record(ROOT / (record or settings(c).record), arm64=arm64, report=print)


@command(name="merge", help=flags_help.MERGE, iterable=["digest", "platform"])
def docker_merge(
    c: Context,
    digest: list[str] | None = None,
    digests_dir: str | None = None,
    platform: list[str] | None = None,
    ref: str | None = None,
    sha: str | None = None,
    event: str | None = None,
    pr: int | None = None,
    image: str | None = None,
    record: str | None = None,
    moving_tags: bool = True,
) -> None:
    """Merge per-platform digests into ONE tagged index (release tags immutable, moving last)."""
    from pipeline.release.merge import MergeRequest, merge_digests, merge_report

    request = MergeRequest(**flags(locals(), "image"))
    merged = merge_digests(
        request, root=ROOT, settings=settings(c, image=image), environ=os.environ
    )
    say(merge_report(merged, os.environ))


@command(name="tag-moving", help=flags_help.TAG_MOVING)
def docker_tag_moving(
    c: Context,
    digest: str = "",
    ref: str | None = None,
    sha: str | None = None,
    event: str | None = None,
    pr: int | None = None,
    image: str | None = None,
) -> None:
    """Write this ref's moving tags onto a digest, only once its cosign signature verifies."""
    from pipeline.release.tagmoving import MovingRequest, tag_moving_request

    request = MovingRequest(**flags(locals(), "image"))
    say(tag_moving_request(request, settings=settings(c, image=image), environ=os.environ))


# --- docker: scan (docker.scan, docker.rescan) ---


@command(help=flags_help.SCAN)
def scan(
    c: Context,
    severity: str | None = None,
    ignore_unfixed: bool = True,
    require: str | None = None,
    ignore_file: str | None = None,
    output_dir: str | None = None,
    db_dir: str | None = None,
    db_update: bool = True,
    platform: str | None = None,
    format: str = "text",
) -> None:
    """Scan the built image (build record): hadolint, Trivy vulns/secrets/config, SBOM; gate it."""
    from pipeline.scan.run import ScanRequest, run_scan

    run_scan(ScanRequest(**flags(locals())), settings=settings(c), environ=os.environ)


@command(help=flags_help.RESCAN)
def rescan(
    c: Context,
    ref: str,
    severity: str | None = None,
    ignore_unfixed: bool = True,
    require: str | None = None,
    ignore_file: str | None = None,
    output_dir: str | None = None,
    db_dir: str | None = None,
    db_update: bool = True,
    platform: str | None = None,
    format: str = "text",
) -> None:
    """Rescan a pushed image by digest (no build record) with docker.scan's gate and reports."""
    from pipeline.scan.run import ScanRequest, run_scan

    request = ScanRequest(target=ref, remote=True, **flags(locals(), "ref"))
    run_scan(request, settings=settings(c), environ=os.environ)


# --- docker: the registry (push, sign, promote, rollback, prune, outdated, publish) ---


@command(name="push", help=flags_help.PUSH)
def registry_push(
    c: Context, record: str | None = None, by_digest: bool = False, digests_dir: str = ""
) -> None:
    """Push every tag of the last build as one multi-arch index; moving tags last.

    --by-digest: the tested one-platform image, by digest only, for docker.merge."""
    from pipeline.release.bydigest import PushRequest, push_task

    request = PushRequest(record, by_digest, digests_dir)
    say(push_task(request, root=ROOT, settings=settings(c), environ=os.environ))


@command(name="sign", help=flags_help.SIGN)
def registry_sign(
    c: Context, ref: str | None = None, record: str | None = None, verify: bool = False
) -> None:
    """Sign the pushed image by digest with cosign (key, or keyless in Actions); --verify checks."""
    from pipeline.release.sign import sign_image

    s = settings(c)
    path = ROOT / (record or s.record)
    print(sign_image(ref, path, settings=s, environ=os.environ, verify_only=verify))


@command(name="promote", help=flags_help.PROMOTE)
def registry_promote(
    c: Context,
    to: str = "",
    ref: str | None = None,
    image: str | None = None,
    record: str | None = None,
) -> None:
    """Point an environment tag at a signed digest (history kept in the registry)."""
    from pipeline.release.promote import PromoteRequest, promote_request

    request = PromoteRequest(to, ref, image, record)
    print(promote_request(request, root=ROOT, settings=settings(c), environ=os.environ))


@command(name="rollback", help=flags_help.ROLLBACK)
def registry_rollback(
    c: Context, env: str = "", to: str | None = None, image: str | None = None
) -> None:
    """Point an environment back at its previous (or the given) signed digest."""
    from pipeline.release.promote import PromoteRequest, promote_request

    request = PromoteRequest(env, to, image, rollback=True)
    print(promote_request(request, root=ROOT, settings=settings(c), environ=os.environ))


@command(name="prune", help=flags_help.PRUNE)
def registry_prune(
    c: Context, keep: int = 10, days: int = 30, yes: bool = False, image: str | None = None
) -> None:
    """Delete old branch/PR images from the registry; releases and environments stay."""
    from pipeline.release.prune import PruneRequest, prune_images

    request = PruneRequest(int(keep), int(days), yes, image)
    prune_images(request, settings=settings(c, image=image), environ=os.environ)


@command(name="outdated", help=flags_help.OUTDATED)
def registry_outdated(c: Context, ref: str | None = None, record: str | None = None) -> None:
    """Exit 1 if the base image moved since the image was built (0 when current)."""
    from pipeline.release.outdated import outdated_status

    s = settings(c)
    status = outdated_status(ref, ROOT / (record or s.record), settings=s, environ=os.environ)
    print(status.line())
    if status.outdated:
        raise Exit(code=1)


@command(name="publish", help=flags_help.PUBLISH, iterable=["platform"])
def registry_publish(
    c: Context,
    push: bool = True,
    sign: bool = True,
    platform: list[str] | None = None,
    severity: str | None = None,
    require: str | None = None,
    db_dir: str | None = None,
    db_update: bool = True,
    cache: str | None = None,
    arm64: bool = True,
    ref: str | None = None,
    sha: str | None = None,
    event: str | None = None,
    pr: int | None = None,
    image: str | None = None,
) -> None:
    """Build, test, scan, push and sign, stopping at the first failure; print a summary."""
    from pipeline.release.publish import PublishRequest, publish_and_report

    request = PublishRequest(**flags(locals(), "image"))
    publish_and_report(request, root=ROOT, settings=settings(c, image=image), environ=os.environ)


# --- deploy (deploy.local, deploy.down, deploy.render, deploy.k8s, deploy.rollback) ---


@command(name="local", help=flags_help.DEPLOY_LOCAL)
def deploy_local(
    c: Context,
    image: str | None = None,
    project: str | None = None,
    port: int | None = None,
    wait: int = 120,
    build: bool = True,
) -> None:
    """Run the gateway + a sample upstream (compose), check a request, print the URL.

    Builds this checkout (cached), starts both services, waits until they are healthy,
    sends a request through the gateway and checks the upstream answered it."""
    from pipeline.deploy.compose import LocalRequest, deploy_local

    request = LocalRequest(image, project, None if port is None else int(port), int(wait), build)
    build_image = functools.partial(docker_build, c, load=True)
    say(
        deploy_local(
            request, root=ROOT, settings=settings(c), environ=os.environ, build_image=build_image
        )
    )


@command(name="down", help=flags_help.DEPLOY_DOWN)
def deploy_down(c: Context, project: str | None = None) -> None:
    """Remove everything deploy.local started: containers, networks, volumes, built images."""
    from pipeline.deploy.compose import deploy_down

    print(deploy_down(project, root=ROOT, settings=settings(c), environ=os.environ))


@command(name="render", help=flags_help.RENDER)
def deploy_render(c: Context, env: str, image: str | None = None, out: str | None = None) -> None:
    """Render the Kubernetes manifests for an environment with the image pinned by digest."""
    from pipeline.deploy.environments import render_env, render_lines

    say(render_lines(render_env(env, image, out, root=ROOT, settings=settings(c))))


@command(name="k8s", help=flags_help.K8S)
def deploy_k8s(
    c: Context,
    env: str,
    image: str | None = None,
    out: str | None = None,
    context: str | None = None,
    timeout: int | None = None,
    dry_run: bool = False,
) -> None:
    """Diff, server-side apply (pruned) and wait; a failed rollout rolls ENV back."""
    from pipeline.deploy.environments import ClusterRequest, deploy_env

    request = ClusterRequest(env, image, None, out, context, timeout, dry_run)
    deploy_env(request, root=ROOT, settings=settings(c), environ=os.environ)


@command(name="rollback", help=flags_help.DEPLOY_ROLLBACK)
def deploy_rollback(
    c: Context,
    env: str,
    to: str | None = None,
    context: str | None = None,
    timeout: int | None = None,
    image: str | None = None,
) -> None:
    """Point ENV back in the registry history (or --to), then apply and wait for that."""
    from pipeline.deploy.environments import ClusterRequest, rollback_env

    request = ClusterRequest(env, image, to=to, context=context, timeout=timeout)
    rollback_env(request, root=ROOT, settings=settings(c), environ=os.environ)


# --- report, notify ---


@command(help=flags_help.REPORT)
def report(
    c: Context,
    last: int = 20,
    history: str | None = None,
    out: str | None = None,
    notify: bool = False,
) -> None:
    """Summarise the last N builds: Markdown, and charts of build time and image size.

    Writes summary.md and SVG + PNG charts to build/report/; in GitHub Actions the Markdown
    also goes to the step summary. --notify posts the latest result to a webhook."""
    from pipeline.history.run import ReportRequest, report_history

    request = ReportRequest(int(last), history, out, notify)
    say(report_history(request, root=ROOT, settings=settings(c), environ=os.environ))


@command(help=flags_help.NOTIFY)
def notify(c: Context, workflow: str | None = None, needs: str = "") -> None:
    """Post a workflow run's outcome, job by job, to NOTIFY_WEBHOOK_URL (Slack-compatible).

    Without the variable nothing is sent (said in one line, exit 0): the webhook is optional."""
    from pipeline.history.run import notify_workflow

    say(notify_workflow(workflow, needs, settings=settings(c), environ=os.environ))


# --- lint (lint.actions, lint.dockerfile) ---


@command(name="actions")
def lint_actions(c: Context) -> None:
    """Lint the workflows, the composite actions and dependabot.yml: actionlint, zizmor
    --offline, and check-jsonschema with its builtin GitHub schemas; all must be clean."""
    from pipeline.lint import lint_actions

    print(lint_actions(ROOT))


@command(name="dockerfile", help=flags_help.LINT_DOCKERFILE)
def lint_dockerfile(c: Context, dockerfile: str | None = None) -> None:
    """Lint the Dockerfile with hadolint."""
    from pipeline.lint import lint_dockerfile

    print(lint_dockerfile(Path(dockerfile) if dockerfile else Path(settings(c).dockerfile), ROOT))


# --- bench (bench.tags, bench.gateway, bench.build) ---


@command(name="tags", help=flags_help.BENCH_TAGS)
def bench_tags(c: Context, runs: int = 20) -> None:
    """Time `invoke docker.tags --format json` as a whole process, against its floor.

    Twice: as this environment is, then with tasks.py and pipeline/ compiled to bytecode first
    (Invoke itself never writes tasks.pyc); the target is judged on the second. Then
    `python -c "import invoke"` alone, the floor no task can go under (target: within 1.2x)."""
    from pipeline.bench.timing import bench_tags

    bench_tags(ROOT, int(runs))


@command(name="gateway", help=flags_help.BENCH_GATEWAY)
def bench_gateway(
    c: Context,
    seconds: float = 0,
    connections: int = 0,
    container: bool = True,
    rounds: int = 0,
    workers: str = "",
    threads: int = 4,
) -> None:
    """Load the gateway, nginx and plain Python proxies with wrk; print req/s, latency, ratios.

    Without --workers: the gateway with 1 and 2 workers, in and out of its container, nginx and
    Python proxies, with the CPU per request of the proxy and the load. With --workers 1,2,4,8
    (a machine with CPUs to spare): each worker count and one nginx worker, the load pinned to
    CPUs apart from the proxy, with each p99/p50 and the scaling ratios."""
    from pipeline.bench.gateway import GatewayBench, bench_gateway

    request = GatewayBench(seconds, connections, container, rounds, workers, threads)
    print(bench_gateway(request, Path(settings(c).record)))


@command(name="build", help=flags_help.BENCH_BUILD)
def bench_build(c: Context, starts: int = 5) -> None:
    """Print build figures: cold vs. cached rebuilds, multi-arch cost, image size, start time."""
    from pipeline.bench.build import run_bench

    figures = run_bench(ROOT, settings(c), os.environ, starts=int(starts), report=print)
    print(f"{sum(f.ok for f in figures)}/{len(figures)} figures within target")


# --- checks ---


@command(help=flags_help.TEST)
def test(
    c: Context, engine: bool = True, k: str | None = None, path: str = "tests", lint: bool = True
) -> None:
    """Lint (ruff, ruff format --check, mypy --strict on pipeline/ and tasks.py), then test."""
    from pipeline.proc import check_steps

    check_steps(ROOT, engine=engine, k=k, path=path, lint=lint)


# --- the namespace ---

docker = Collection("docker", tags, docker_build, docker_test, docker_merge, docker_tag_moving)
for _task in (scan, rescan, registry_push, registry_publish, registry_sign, registry_promote):
    docker.add_task(_task)
for _task in (registry_rollback, registry_prune, registry_outdated):
    docker.add_task(_task)
deploy = Collection("deploy", deploy_local, deploy_down, deploy_render, deploy_k8s)
deploy.add_task(deploy_rollback)
lint = Collection("lint", lint_actions, lint_dockerfile)
bench = Collection("bench", bench_tags, bench_gateway, bench_build)
ns = Collection(docker, deploy, lint, bench, report, notify, test)
pyproject = load_pyproject(ROOT / "pyproject.toml", write_cache=not sys.dont_write_bytecode)
ns.configure({"docker": invoke_defaults(pyproject)})

# Everything loaded so far (Invoke and its imports, this namespace, the settings) lives until the
# process exits: move it out of the cyclic collector's sight, so neither its collections during
# the task nor the full one at exit walk it again. ~20% of a short task's wall time.
gc.freeze()
