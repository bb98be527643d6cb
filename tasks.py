"""The Invoke namespace: flags in, ``pipeline`` calls, one-line ``Exit`` out.

Heavy libraries (python-on-whales, matplotlib) are imported inside tasks so `invoke --list` and
`invoke docker.tags` stay fast. Settings come from ``[tool.pipeline]`` in pyproject.toml and are
loaded into Invoke's config under ``docker``: ``INVOKE_DOCKER_IMAGE=...`` or a flag overrides them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

# Invoke turns bytecode writing off before it loads this file (its --write-pyc flag, off by
# default) to keep a tasks.pyc out of the tree. ``pipeline`` is an ordinary library and should be
# cached like one, or every `invoke` run recompiles it from source (~15 ms for docker.tags):
# restore Python's own setting before importing it. PYTHONDONTWRITEBYTECODE and -B are still
# honoured, and so is `invoke --write-pyc`.
sys.dont_write_bytecode = sys.dont_write_bytecode and sys.flags.dont_write_bytecode

from pipeline.config import Settings, invoke_defaults, load_pyproject  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402

ROOT = Path(__file__).resolve().parent


# --- edge helpers ---


@contextmanager
def edge() -> Iterator[None]:
    """Typed pipeline errors become one actionable line and their exit code; no traceback."""
    try:
        yield
    except PipelineError as exc:
        raise Exit(f"error: {exc.one_line()}", code=exc.exit_code) from None
    except KeyboardInterrupt:
        raise Exit("interrupted", code=130) from None


def settings(c: Context, **overrides: Any) -> Settings:
    """Validated settings: pyproject, then INVOKE_DOCKER_* (Invoke), then flags."""
    data = dict(c.config.docker)
    data["tags"] = dict(data.get("tags", {}))
    data.update({k: v for k, v in overrides.items() if v not in (None, "", [], ())})
    if overrides.get("image") is not None:
        from pipeline.oci.name import parse_image_name

        data["image"] = parse_image_name(str(overrides["image"]), what="--image")
    return Settings.from_mapping(data)


def _defaults() -> dict[str, Any]:
    section = invoke_defaults(load_pyproject(ROOT / "pyproject.toml"))
    # Invoke cannot cast an INVOKE_* variable onto a list: keep platforms a comma string.
    if isinstance(section.get("platforms"), list):
        section["platforms"] = ",".join(section["platforms"])
    return section


# --- docker ---


@task(
    help={
        "ref": "git ref to tag for: refs/heads/NAME, refs/tags/vX.Y.Z (a short name is a branch)",
        "sha": "commit SHA (default: HEAD, or GITHUB_SHA in Actions)",
        "event": "GitHub event: push, pull_request, workflow_dispatch, schedule or local",
        "pr": "pull request number (implies --event pull_request)",
        "default_branch": "the repository's default branch (default: [tool.pipeline.tags])",
        "image": "image name, e.g. ghcr.io/acme/api-gateway (default: [tool.pipeline] image)",
        "released": "a released version, for latest = 'release' (repeatable)",
        "format": "text, json, or github (appends outputs to $GITHUB_OUTPUT)",
    },
    iterable=["released"],
)
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
    from pipeline.errors import UsageError
    from pipeline.release.tags import image_tags

    with edge():
        if format not in ("text", "json", "github"):
            raise UsageError(f"--format {format!r}: expected text, json or github")
        _, result = image_tags(
            os.environ,
            Path.cwd(),
            settings(c, image=image),
            event=event,
            ref=ref,
            sha=sha,
            pr=int(pr) if pr is not None else None,
            default_branch=default_branch,
            released=released or (),
        )
        document = result.as_json()
        if format == "json":
            print(json.dumps(document, indent=2))
            return
        if format == "github":
            from pipeline.github import write_outputs

            target = os.environ.get("GITHUB_OUTPUT")
            if not target:
                raise UsageError("--format github: GITHUB_OUTPUT is not set")
            write_outputs(
                Path(target),
                {
                    "version": result.version,
                    "tags": "\n".join(result.tags),
                    "tag_names": "\n".join(result.tag_names),
                    "labels": "\n".join(f"{k}={v}" for k, v in result.labels.items()),
                    "latest": "true" if result.latest else "false",
                    "json": json.dumps(document),
                },
            )
        print(f"version: {result.version}")
        print("tags:")
        for full in result.tags:
            print(f"  {full}")
        print("labels:")
        for key, value in result.labels.items():
            print(f"  {key}={value}")


docker = Collection("docker")
docker.add_task(tags)

# --- docker: build and test (docker.build, docker.test) ---


@task(
    name="build",
    help={
        "platform": "target platform, e.g. linux/arm64 (repeatable; default: this machine's, "
        "or every [tool.pipeline] platforms in GitHub Actions)",
        "push": "push the image and its tags to the registry (with max-mode provenance)",
        "load": "load the image into the local image store (the default unless --push)",
        "cache": "layer cache: a directory (default [tool.pipeline] cache_dir), registry:REF, "
        "gha or gha:SCOPE (default in Actions: one scope per platform), or none",
        "builder": "buildx builder to use (docker, docker-container, remote, kubernetes...)",
        "target": "Dockerfile stage to build (default: the last, the runtime image)",
        "build_arg": "KEY=VALUE build argument (repeatable)",
        "progress": "auto (step names), plain (all output), tty, or quiet",
        "no_cache": "ignore every cached layer (a cold build)",
        "ref": "git ref to build for: refs/heads/NAME, refs/tags/vX.Y.Z (a short name is a branch)",
        "sha": "commit SHA (default: HEAD, or GITHUB_SHA in Actions)",
        "event": "GitHub event: push, pull_request, workflow_dispatch, schedule or local",
        "pr": "pull request number (implies --event pull_request)",
        "image": "image name, e.g. ghcr.io/acme/api-gateway (default: [tool.pipeline] image)",
        "push_by_digest": "with --push and one --platform: push that platform's image by "
        "digest only (no tag) and write it to build/digests/OS-ARCH, for docker.merge",
    },
    iterable=["platform", "build_arg"],
)
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
    from pipeline.build.plan import BuildOptions
    from pipeline.build.run import build_with_history
    from pipeline.history.store import history_path
    from pipeline.release.tags import image_tags

    with edge():
        config = settings(c, image=image)
        context, computed = image_tags(
            os.environ,
            Path.cwd(),
            config,
            event=event,
            ref=ref,
            sha=sha,
            pr=int(pr) if pr is not None else None,
        )
        options = BuildOptions(
            platforms=tuple(platform or ()),
            push=push,
            load=load,
            cache=cache,
            builder=builder,
            target=target,
            build_args=tuple(build_arg or ()),
            progress=progress,
            no_cache=no_cache,
            push_by_digest=push_by_digest,
        )
        record_path = ROOT / config.record
        result = build_with_history(
            history_path(ROOT, config.extra),
            root=ROOT,
            settings=config,
            build_context=context,
            tags=computed,
            options=options,
            environ=os.environ,
            record_path=record_path,
        )
        record = result.record
        where = "pushed" if record.pushed else "loaded"
        platforms = ", ".join(record.platforms)
        name = f"{record.image}@{record.digest}" if push_by_digest else record.reference
        print(
            f"{where} {name} ({platforms}) in {record.duration_s:g}s, "
            f"{record.cached_steps}/{record.total_steps} steps cached"
        )
        print(f"digest {record.digest or '(unknown)'}")
        if push_by_digest:
            print(f"digest file {record.extra.get('digest_file', '')}")
        print(f"base {record.base_name}@{record.base_digest}")
        for name, size in record.sizes.items():
            print(f"size {name}: {size / 1e6:.1f} MB compressed")
        print(f"record {record_path}")


@task(
    name="test",
    help={
        "record": "build record to test (default: [tool.pipeline] record)",
        "arm64": "also start the linux/arm64 image under QEMU when the record has it "
        "(default: yes)",
    },
)
def docker_test(c: Context, record: str | None = None, arm64: bool = True) -> None:
    """Run the built image (from the build record) and check it against real containers."""
    from pipeline.build.containertest import run_checks
    from pipeline.build.record import BuildRecord

    with edge():
        config = settings(c)
        built = BuildRecord.read(ROOT / (record or config.record))
        run_checks(built, arm64=arm64, report=print)


@task(
    name="merge",
    help={
        "digest": "a per-platform image digest, sha256:... (repeatable), pushed by "
        "`docker.build --push --push-by-digest`",
        "digests_dir": "directory of digest files named OS-ARCH (default: build/digests if "
        "no --digest is given)",
        "platform": "a platform the index must contain (repeatable; default: [tool.pipeline] "
        "platforms)",
        "ref": "git ref to tag for: refs/heads/NAME, refs/tags/vX.Y.Z (a short name is a branch)",
        "sha": "commit SHA (default: HEAD, or GITHUB_SHA in Actions)",
        "event": "GitHub event: push, pull_request, workflow_dispatch, schedule or local",
        "pr": "pull request number (implies --event pull_request)",
        "image": "image name, e.g. ghcr.io/acme/api-gateway (default: [tool.pipeline] image)",
        "record": "build record to write (default: [tool.pipeline] record)",
    },
    iterable=["digest", "platform"],
)
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
) -> None:
    """Merge per-platform digests into ONE tagged index (release tags immutable, moving last)."""
    from pipeline.build.plan import DIGESTS_DIR
    from pipeline.clock import utc_stamp
    from pipeline.oci.reference import parse_reference
    from pipeline.registry.client import client_for
    from pipeline.release.merge import merge_sources, merge_to_record, read_digests_dir, record_for
    from pipeline.release.tags import image_tags

    with edge():
        config = settings(c, image=image)
        context, computed = image_tags(
            os.environ,
            Path.cwd(),
            config,
            event=event,
            ref=ref,
            sha=sha,
            pr=int(pr) if pr is not None else None,
        )
        directory = digests_dir or ("" if digest else DIGESTS_DIR)
        from_dir = read_digests_dir(ROOT / directory) if directory else {}
        sources = merge_sources(digest or (), from_dir.values())
        expected = [p.strip() for v in platform or () for p in v.split(",") if p.strip()]
        expected = expected or list(config.platforms)
        planned = record_for(computed, context, expected, utc_stamp())
        host = parse_reference(planned.image).host
        merged = merge_to_record(
            planned,
            sources,
            client_for(host, extra=config.extra, environ=os.environ),
            record_path=ROOT / (record or config.record),
            expected=expected,
            latest_policy=config.tags.latest,
        )
        print(f"digest={merged.digest}")
        print(f"tags={','.join(merged.extra['push']['tags'])}")
        print(f"platforms={','.join(merged.platforms)}")
        target = os.environ.get("GITHUB_OUTPUT")
        if target:
            from pipeline.github import write_outputs

            write_outputs(
                Path(target),
                {
                    "digest": merged.digest,
                    "version": merged.version,
                    "tags": "\n".join(merged.full_tags),
                    "platforms": ",".join(merged.platforms),
                },
            )


docker.add_task(docker_build)
docker.add_task(docker_test)
docker.add_task(docker_merge)

# --- docker: scan (docker.scan, docker.rescan) ---

_SCAN_HELP = {
    "severity": "severities that fail the gate, e.g. HIGH,CRITICAL (default: [tool.pipeline.scan])",
    "ignore_unfixed": "vulnerabilities fail only with a fix available (default); "
    "--no-ignore-unfixed fails on unfixed ones too",
    "require": "scanners that must run ('not scanned' then fails): "
    "vuln,secret,config,dockerfile,sbom, all or none (CI: all)",
    "ignore_file": "ignore file: [[ignore]] entries with id, reason, expires "
    "(default: .scanignore.toml)",
    "output_dir": "where summary.md, scan.json, scan.sarif, sbom.cdx.json go (default: build/scan)",
    "db_dir": "Trivy cache dir holding the vulnerability DB in db/ (default: $TRIVY_CACHE_DIR or "
    "Trivy's own cache)",
    "db_update": "let Trivy download/refresh its DB (default); --no-db-update uses it as it is",
    "platform": "platform to scan, e.g. linux/amd64 (default: the Docker daemon's)",
    "format": "text, json (scan.json on stdout) or github (also writes $GITHUB_OUTPUT)",
}


def _scan_run(
    c: Context,
    *,
    target: str,
    remote: bool,
    severity: str | None,
    ignore_unfixed: bool,
    require: str | None,
    ignore_file: str | None,
    output_dir: str | None,
    db_dir: str | None,
    db_update: bool,
    platform: str | None,
    format: str,
) -> None:
    """Shared by docker.scan and docker.rescan: flags in, ``pipeline.scan.run.run_scan``."""
    from pipeline.scan.run import ScanRequest, run_scan

    request = ScanRequest(
        target=target,
        remote=remote,
        severity=severity,
        ignore_unfixed=ignore_unfixed,
        require=require,
        ignore_file=ignore_file,
        output_dir=output_dir,
        db_dir=db_dir,
        db_update=db_update,
        platform=platform,
        format=format,
    )
    run_scan(request, settings=settings(c), environ=os.environ, bin_dir=ROOT / ".venv" / "bin")


@task(help=dict(_SCAN_HELP))
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
    with edge():
        _scan_run(
            c,
            target="",
            remote=False,
            severity=severity,
            ignore_unfixed=ignore_unfixed,
            require=require,
            ignore_file=ignore_file,
            output_dir=output_dir,
            db_dir=db_dir,
            db_update=db_update,
            platform=platform,
            format=format,
        )


@task(
    help={
        "ref": "pushed image, e.g. ghcr.io/acme/api-gateway:1.2.3 (resolved to its digest)",
        **_SCAN_HELP,
    }
)
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
    with edge():
        _scan_run(
            c,
            target=ref,
            remote=True,
            severity=severity,
            ignore_unfixed=ignore_unfixed,
            require=require,
            ignore_file=ignore_file,
            output_dir=output_dir,
            db_dir=db_dir,
            db_update=db_update,
            platform=platform,
            format=format,
        )


docker.add_task(scan)
docker.add_task(rescan)

# --- docker: registry (docker.push, docker.sign, docker.promote, docker.rollback, docker.prune,
# docker.publish, docker.outdated) ---


def _client(host: str, s: Settings) -> Any:
    """A registry client for ``host``: credentials and retries from settings and environment."""
    from pipeline.registry.client import client_for

    return client_for(host, extra=s.extra, environ=os.environ)


def _image_ref(s: Settings, image: str | None) -> Any:
    from pipeline.oci.reference import parse_reference

    return parse_reference(image or s.image)


def _verifier() -> Any:
    """A signature check for promote/rollback, from COSIGN_* (or keyless in Actions)."""
    from pipeline.release.sign import verifier_from_env

    return verifier_from_env(os.environ)


@task(
    name="push",
    help={
        "record": "build record to push (default: [tool.pipeline] record, build/image.toml)",
    },
)
def registry_push(c: Context, record: str | None = None) -> None:
    """Push every tag of the last build as one multi-arch index; moving tags last."""
    from pipeline.release.push import push_record

    with edge():
        s = settings(c)
        result = push_record(
            ROOT / (record or s.record),
            extra=s.extra,
            environ=os.environ,
            latest_policy=s.tags.latest,
        )
        print(f"digest={result.digest}")
        print(f"platforms={','.join(result.platforms)}")
        print(f"tags={','.join(result.tags)}")


@task(
    name="sign",
    help={
        "ref": "IMAGE@DIGEST or IMAGE:TAG to sign (default: the pushed digest of the record)",
        "record": "build record (default: [tool.pipeline] record)",
        "verify": "check the signature instead of signing (exit 1 if it does not verify)",
    },
)
def registry_sign(
    c: Context, ref: str | None = None, record: str | None = None, verify: bool = False
) -> None:
    """Sign the pushed image by digest with cosign (key, or keyless in Actions); --verify checks."""
    from pipeline.build.record import BuildRecord
    from pipeline.errors import UsageError
    from pipeline.oci.reference import parse_reference
    from pipeline.release.sign import config_from_env, require_signed, sign

    with edge():
        s = settings(c)
        if ref:
            target = parse_reference(ref)
        else:
            rec = BuildRecord.read(ROOT / (record or s.record))
            if not rec.pushed or not rec.digest:
                raise UsageError(
                    f"{rec.image} has not been pushed", hint="run `invoke docker.push` first"
                )
            target = parse_reference(rec.image).with_digest(rec.digest)
        if not target.digest:
            target = target.with_digest(
                _client(target.host, s).manifest(target.repository, target.tag).digest
            )
        config = config_from_env(os.environ)
        if verify:
            require_signed(target, config)
            print(f"verified {target}")
        else:
            sign(target, config)
            print(f"signed {target} ({config.mode})")


@task(
    name="promote",
    help={
        "to": "environment to promote to (staging, production, or [tool.pipeline] environments)",
        "ref": "TAG or sha256:DIGEST to promote (default: the pushed digest of the record)",
        "image": "repository (default: [tool.pipeline] image)",
        "record": "build record (default: [tool.pipeline] record)",
    },
)
def registry_promote(
    c: Context,
    to: str = "",
    ref: str | None = None,
    image: str | None = None,
    record: str | None = None,
) -> None:
    """Point an environment tag at a signed digest (history kept in the registry)."""
    from pipeline.build.record import BuildRecord
    from pipeline.errors import UsageError
    from pipeline.release.promote import check_environment, environments, promote

    with edge():
        s = settings(c, image=image)
        allowed = environments(s.extra.get("environments"))
        check_environment(to, allowed)
        target = _image_ref(s, image)
        if ref is None:
            rec = BuildRecord.read(ROOT / (record or s.record))
            if not rec.pushed or not rec.digest:
                raise UsageError(
                    f"{rec.image} has not been pushed", hint="push first, or pass --ref"
                )
            ref = rec.digest
            target = _image_ref(s, image or rec.image)
        result = promote(
            _client(target.host, s), target, to, ref, allowed=allowed, verified=_verifier()
        )
        print(f"{to}={result.digest}")


@task(
    name="rollback",
    help={
        "env": "environment to roll back (staging, production...)",
        "to": "TAG or sha256:DIGEST to go back to (default: the digest it had before)",
        "image": "repository (default: [tool.pipeline] image)",
    },
)
def registry_rollback(
    c: Context, env: str = "", to: str | None = None, image: str | None = None
) -> None:
    """Point an environment back at its previous (or the given) signed digest."""
    from pipeline.release.promote import check_environment, environments, rollback

    with edge():
        s = settings(c, image=image)
        allowed = environments(s.extra.get("environments"))
        check_environment(env, allowed)
        target = _image_ref(s, image)
        result = rollback(
            _client(target.host, s), target, env, to, allowed=allowed, verified=_verifier()
        )
        print(f"{env}={result.digest}")


@task(
    name="prune",
    help={
        "keep": "builds to keep per branch or pull request (default: 10)",
        "days": "delete branch/PR builds older than this many days (default: 30)",
        "yes": "really delete (default: dry run, print the plan)",
        "image": "repository (default: [tool.pipeline] image)",
    },
)
def registry_prune(
    c: Context, keep: int = 10, days: int = 30, yes: bool = False, image: str | None = None
) -> None:
    """Delete old branch/PR images from the registry; releases and environments stay."""
    from datetime import UTC, datetime

    from pipeline.release.promote import environments
    from pipeline.release.prune import Retention, execute, gather, plan

    with edge():
        s = settings(c, image=image)
        target = _image_ref(s, image)
        retention = Retention(int(keep), int(days), environments(s.extra.get("environments")))
        client = _client(target.host, s)
        tags_, created, versions = gather(client, target.repository, retention.environments)
        result = plan(tags_, created, retention, datetime.now(UTC), versions)
        execute(client, target.repository, result, retention, yes=yes)


@task(
    name="outdated",
    help={
        "ref": "a pushed IMAGE:TAG or IMAGE@DIGEST (default: the last build record)",
        "record": "build record (default: [tool.pipeline] record)",
    },
)
def registry_outdated(c: Context, ref: str | None = None, record: str | None = None) -> None:
    """Exit 1 if the base image moved since the image was built (0 when current)."""
    from pipeline.build.record import BuildRecord
    from pipeline.oci.reference import parse_reference
    from pipeline.release import outdated as od

    with edge():
        s = settings(c)
        if ref:
            target = parse_reference(ref)
            config = od.config_of(_client(target.host, s), target)
            base = od.base_from_config(config, str(target))
        else:
            base = od.base_from_record(BuildRecord.read(ROOT / (record or s.record)))
        mirrors = dict(s.extra.get("mirrors", {}) or {})
        if parse_reference(base.name).host == "docker.io" and "docker.io" not in mirrors:
            from contextlib import suppress

            from pipeline.engine import daemon_info
            from pipeline.errors import EngineError

            with suppress(EngineError):  # no daemon: ask Docker Hub itself
                mirrors.update(od.hub_mirror(daemon_info().mirrors))
        status = od.check(base, lambda host: _client(host, s), mirrors)
        print(status.line())
    if status.outdated:
        raise Exit(code=1)


@task(
    name="publish",
    help={
        "push": "push after build, test and scan (default: yes; pull_request events never "
        "push); --no-push stops after the scan",
        "sign": "sign the digest with cosign before any moving tag is written (default: yes; "
        "needs COSIGN_KEY/COSIGN_PASSWORD, or keyless in Actions)",
        "platform": "target platform (repeatable; default: this machine's, or every "
        "[tool.pipeline] platforms in GitHub Actions)",
        "severity": "severities that fail the scan gate, e.g. HIGH,CRITICAL",
        "require": "scanners that must run (see docker.scan --require)",
        "db_dir": "Trivy cache dir with the vulnerability DB (default: $TRIVY_CACHE_DIR)",
        "db_update": "let Trivy refresh its DB (default); --no-db-update uses it as it is",
        "cache": "layer cache (see docker.build --cache)",
        "arm64": "also start the linux/arm64 image under QEMU in the tests (default: yes)",
        "ref": "git ref to publish for: refs/heads/NAME, refs/tags/vX.Y.Z",
        "sha": "commit SHA (default: HEAD, or GITHUB_SHA in Actions)",
        "event": "GitHub event: push, pull_request, workflow_dispatch, schedule or local",
        "pr": "pull request number (implies --event pull_request, which never pushes)",
        "image": "image name (default: [tool.pipeline] image)",
    },
    iterable=["platform"],
)
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
    from pipeline.github import append_summary, write_outputs
    from pipeline.release import publish as pub
    from pipeline.release import summary as pub_summary

    with edge():
        request = pub.PublishRequest(
            push=push,
            sign=sign,
            platforms=tuple(platform or ()),
            severity=severity,
            require=require,
            db_dir=db_dir,
            db_update=db_update,
            cache=cache,
            arm64=arm64,
            ref=ref,
            sha=sha,
            event=event,
            pr=int(pr) if pr is not None else None,
        )
        result = pub.publish(
            request,
            root=ROOT,
            settings=settings(c, image=image),
            environ=os.environ,
            cwd=Path.cwd(),
            bin_dir=ROOT / ".venv" / "bin",
        )
        print(pub_summary.text(result))
        summary_file = os.environ.get("GITHUB_STEP_SUMMARY", "")
        if summary_file:
            append_summary(Path(summary_file), pub_summary.markdown(result))
        if os.environ.get("GITHUB_OUTPUT"):
            write_outputs(
                Path(os.environ["GITHUB_OUTPUT"]), pub_summary.outputs(result, summary_file)
            )
        if result.failure is not None:
            raise result.failure


docker.add_task(registry_push)
docker.add_task(registry_publish)
docker.add_task(registry_sign)
docker.add_task(registry_promote)
docker.add_task(registry_rollback)
docker.add_task(registry_prune)
docker.add_task(registry_outdated)

# --- deploy and report (deploy.*, report) ---

deploy = Collection("deploy")


def _extra(s: Settings, key: str, default: str) -> str:
    """A path or name from [tool.pipeline] beyond the typed settings (kept in ``extra``)."""
    value = s.extra.get(key, default)
    return str(value) if value not in (None, "") else default


def _recorded_local_image(c: Context, s: Settings, build: bool) -> str:
    """The image docker.build recorded and loaded; built first when there is none."""
    from pipeline.build.record import BuildRecord
    from pipeline.engine import image_exists as image_present
    from pipeline.errors import UsageError

    path = ROOT / s.record
    try:
        record = BuildRecord.read(path)
        if record.loaded and image_present(record.reference):
            return record.reference
    except UsageError:
        pass
    builder = docker.tasks.get("build")
    if not build or builder is None:
        raise UsageError(
            f"no loaded image recorded in {s.record}",
            hint="run `invoke docker.build`, or pass --image REF",
        )
    print("deploy.local: no local image recorded yet: running docker.build", flush=True)
    builder(c, load=True)
    record = BuildRecord.read(path)
    if not (record.loaded and image_present(record.reference)):
        raise UsageError(f"docker.build did not load {record.reference} into the local store")
    return record.reference


def _stack(s: Settings, project: str | None, image: str, port: str = "") -> Any:
    from pipeline.deploy import compose

    return compose.stack_for(
        ROOT,
        image=image,
        environ=os.environ,
        project=project or _extra(s, "compose_project", compose.PROJECT),
        port=port,
        compose_file=_extra(s, "compose_file", "docker/compose.yaml"),
    )


@task(
    name="local",
    help={
        "image": "gateway image in the local store (default: .env.local GATEWAY_IMAGE, then"
        " the image in build/image.toml, built first if missing)",
        "project": "compose project name (default: api-gateway-local); deploy.down takes the same",
        "port": "host port for the gateway (default: GATEWAY_PORT or 8080; 0: any free port)",
        "wait": "seconds to wait for the services to become healthy (default 120)",
        "build": "build the image when none is recorded (default: yes; --no-build refuses)",
    },
)
def deploy_local(
    c: Context,
    image: str | None = None,
    project: str | None = None,
    port: int | None = None,
    wait: int = 120,
    build: bool = True,
) -> None:
    """Run the gateway + a sample upstream (compose), check a request, print the URL.

    Builds the image if none is recorded, starts both services, waits until they are healthy,
    sends a request through the gateway and checks the upstream answered it."""
    from pipeline import engine
    from pipeline.deploy import compose
    from pipeline.errors import UsageError

    with edge():
        s = settings(c)
        env_file = compose.read_env_file(ROOT / ".env.local")
        ref = image or env_file.get("GATEWAY_IMAGE", "")
        if not ref:
            ref = _recorded_local_image(c, s, build)
        elif not engine.image_exists(ref):
            raise UsageError(
                f"image {ref} is not in the local image store",
                hint="docker pull it, or leave out --image to use the built image",
            )
        stack = _stack(s, project, ref, str(port) if port is not None else "")
        compose.up(stack, wait_s=int(wait))
        url = compose.published_url(stack)
        answer = compose.request(f"{url}/api/hello?from=deploy.local")
        upstream = compose.check_answer(stack, answer)
        print(f"gateway: {url}  (project {stack.project}, image {ref})")
        print(
            f"request: GET {answer.url} -> {answer.status} from {upstream}"
            f" (upstream saw {answer.body.get('method')} {answer.body.get('path')},"
            f" x-gateway: {answer.body.get('headers', {}).get('x-gateway', '-')})"
        )
        print(f"stop with: invoke deploy.down --project {stack.project}")


@task(name="down", help={"project": "compose project name (default: api-gateway-local)"})
def deploy_down(c: Context, project: str | None = None) -> None:
    """Remove everything deploy.local started: containers, networks, volumes, built images."""
    from pipeline import engine
    from pipeline.deploy import compose
    from pipeline.errors import EngineError

    with edge():
        stack = _stack(settings(c), project, compose.UNUSED_IMAGE)
        compose.down(stack)
        left = engine.leftovers(stack.project)
        if left:
            raise EngineError(f"{stack.project}: still present after down: {', '.join(left)}")
        print(f"removed: compose project {stack.project}")


_K8S_HELP = {
    "env": "staging or production (an overlay in docker/k8s/overlays/)",
    "image": "image to deploy, NAME:TAG (resolved to its digest) or NAME@sha256:... (default:"
    " the pushed digest in build/image.toml)",
    "out": "directory for the rendered manifests (default: build/k8s)",
}


def _k8s_dir(s: Settings, env: str) -> Path:
    """The kustomize directory; a bad --env is said before anything else runs."""
    from pipeline.deploy import k8s

    k8s_dir = ROOT / _extra(s, "k8s_dir", "docker/k8s")
    k8s.overlay_dir(k8s_dir, env)
    return k8s_dir


def _render(s: Settings, k8s_dir: Path, env: str, image: str | None, out: str | None) -> Any:
    """The overlay rendered with --image (or the recorded pushed digest) pinned by digest."""
    from pipeline.deploy import k8s

    return k8s.render(
        k8s_dir,
        env,
        k8s.image_for(image, ROOT / s.record),
        Path(out) if out else ROOT / _extra(s, "manifests_dir", "build/k8s"),
    )


@task(name="render", help=_K8S_HELP)
def deploy_render(c: Context, env: str, image: str | None = None, out: str | None = None) -> None:
    """Render the Kubernetes manifests for an environment with the image pinned by digest."""
    with edge():
        s = settings(c)
        rendered = _render(s, _k8s_dir(s, env), env, image, out)
        print(f"rendered {rendered.env}: {rendered.path}")
        print(f"  image: {rendered.image}")
        print(f"  namespace: {rendered.namespace}")


@task(
    name="k8s",
    help={
        **_K8S_HELP,
        "context": "kubectl context (default: the current context of KUBECONFIG)",
        "timeout": "seconds to wait for the rollout (default 300)",
    },
)
def deploy_k8s(
    c: Context,
    env: str,
    image: str | None = None,
    out: str | None = None,
    context: str | None = None,
    timeout: int = 300,
) -> None:
    """Render the manifests, apply them with kubectl and wait for the rollout."""
    from pipeline.deploy import k8s

    with edge():
        s = settings(c)
        k8s_dir = _k8s_dir(s, env)
        used = k8s.require_cluster(context=context, env=os.environ)
        rendered = _render(s, k8s_dir, env, image, out)
        k8s.apply(rendered.path, context=context, env=os.environ, timeout_s=int(timeout))
        print(f"deployed {rendered.image} to {rendered.namespace} ({used})")


@task(
    name="rollback",
    help={
        "env": "staging or production",
        "context": "kubectl context (default: the current context of KUBECONFIG)",
        "revision": "roll back to this Deployment revision (default: the previous one)",
        "timeout": "seconds to wait for the rollout (default 300)",
    },
)
def deploy_rollback(
    c: Context,
    env: str,
    context: str | None = None,
    revision: int | None = None,
    timeout: int = 300,
) -> None:
    """Undo the last Kubernetes rollout of an environment and wait for it."""
    from pipeline.deploy import k8s

    with edge():
        s = settings(c)
        k8s_dir = _k8s_dir(s, env)
        used = k8s.require_cluster(context=context, env=os.environ)
        namespace = k8s.overlay_namespace(k8s_dir, env)
        k8s.rollback(
            namespace,
            context=context,
            env=os.environ,
            to_revision=int(revision) if revision is not None else None,
            timeout_s=int(timeout),
        )
        print(f"rolled back deployment/gateway in {namespace} ({used})")


deploy.add_task(deploy_local)
deploy.add_task(deploy_down)
deploy.add_task(deploy_render)
deploy.add_task(deploy_k8s)
deploy.add_task(deploy_rollback)


@task(
    help={
        "last": "how many of the latest builds to cover (default 20)",
        "history": "the history file (default: [tool.pipeline] history or build/history.jsonl)",
        "out": "directory for summary.md and the charts (default: build/report)",
        "notify": "also post the latest result to NOTIFY_WEBHOOK_URL (Slack-compatible)",
    }
)
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
    from pipeline.errors import UsageError
    from pipeline.history.report import read_history, render_markdown, write_report

    with edge():
        s = settings(c)
        path = Path(history) if history else ROOT / _extra(s, "history", "build/history.jsonl")
        webhook = os.environ.get("NOTIFY_WEBHOOK_URL", "")
        if notify and not webhook:
            raise UsageError("--notify: NOTIFY_WEBHOOK_URL is not set")
        data = read_history(path)
        result = write_report(data, int(last), Path(out) if out else ROOT / "build" / "report")
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            from pipeline.github import append_summary

            entries = data.last(int(last))
            text = render_markdown(entries, skipped=data.skipped)
            names = ", ".join(p.name for p in result.charts if p.suffix == ".svg")
            append_summary(Path(summary), text + f"\nCharts: {names} (in build/report/)\n")
        print(f"report: {result.markdown}")
        for chart in result.charts:
            print(f"chart: {chart}")
        if notify:
            from pipeline.github import run_url
            from pipeline.history.notify import payload, send

            latest = data.entries[-1]
            message = payload(latest, project=s.title or "api-gateway", run_url=run_url(os.environ))
            sent = send(webhook, message)
            commit = latest.commit[:7] or "?"
            print(f"notified: {latest.result} of {commit} ({sent.attempts} attempt(s))")


@task(
    help={
        "workflow": "the workflow's name, for the message (default: GITHUB_WORKFLOW)",
        "needs": "the JSON of Actions' needs context: each job's result (pass it through env)",
    }
)
def notify(c: Context, workflow: str | None = None, needs: str = "") -> None:
    """Post a workflow run's outcome, job by job, to NOTIFY_WEBHOOK_URL (Slack-compatible).

    Without the variable nothing is sent (said in one line, exit 0): the webhook is optional."""
    from pipeline.github import run_url
    from pipeline.history.notify import job_results, send, workflow_payload

    with edge():
        s = settings(c)
        jobs = job_results(needs)
        name = workflow or os.environ.get("GITHUB_WORKFLOW", "") or "workflow"
        message = workflow_payload(
            name,
            jobs,
            project=s.title or "api-gateway",
            ref=os.environ.get("GITHUB_REF_NAME", ""),
            run_url=run_url(os.environ),
        )
        print(message["text"])
        webhook = os.environ.get("NOTIFY_WEBHOOK_URL", "")
        if not webhook:
            print("notify: NOTIFY_WEBHOOK_URL is not set: nothing sent")
            return
        sent = send(webhook, message)
        print(f"notified: {name} ({sent.attempts} attempt(s))")


# --- lint (lint.actions, lint.dockerfile) ---

lint = Collection("lint")


def _venv_tool(name: str) -> str:
    """A linter from this environment's bin/ (uv sync installs them there), else from PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _print_outcome(outcome: Any) -> None:
    mark = "ok" if outcome.ok else f"FAILED (exit code {outcome.returncode})"
    print(f"== {outcome.check.name}: {mark}")
    if outcome.output and not outcome.ok:
        print(outcome.output)
    sys.stdout.flush()


@task(name="actions")
def lint_actions(c: Context) -> None:
    """Lint the workflows, the composite actions and dependabot.yml: actionlint, zizmor
    --offline, and check-jsonschema with its builtin GitHub schemas; all must be clean."""
    from pipeline.lint import action_checks, find_targets, run_checks

    with edge():
        targets = find_targets(ROOT)
        run_checks(action_checks(targets, _venv_tool), cwd=ROOT, echo=_print_outcome)
        print(f"clean: {len(targets.all)} files")


@task(name="dockerfile", help={"dockerfile": "the Dockerfile (default: [tool.pipeline])"})
def lint_dockerfile(c: Context, dockerfile: str | None = None) -> None:
    """Lint the Dockerfile with hadolint."""
    from pipeline.lint import dockerfile_checks, run_checks

    with edge():
        path = Path(dockerfile) if dockerfile else Path(settings(c).dockerfile)
        run_checks(dockerfile_checks(path, _venv_tool), cwd=ROOT, echo=_print_outcome)
        print(f"clean: {path}")


lint.add_task(lint_actions)
lint.add_task(lint_dockerfile)

# --- bench (bench.gateway, bench.build) ---

bench = Collection("bench")


@task(
    name="tags",
    help={"runs": "timed runs after one warm-up, for each figure (default 20)"},
)
def bench_tags(c: Context, runs: int = 20) -> None:
    """Time `invoke docker.tags --format json` as a whole process (target: under 0.3 s).

    Twice: as this environment is, then with tasks.py and pipeline/ compiled to bytecode first
    (Invoke itself never writes tasks.pyc); the target is judged on the second. Then
    `python -c "import invoke"` alone, the floor no task can go under.
    """
    from pipeline.bench.timing import compile_bytecode, fresh_bytecode, time_process

    argv = [sys.executable, "-m", "invoke", "-r", str(ROOT), "docker.tags", "--format", "json"]
    sources = [ROOT / "tasks.py", *sorted((ROOT / "pipeline").glob("*.py"))]
    label = "invoke docker.tags (whole process)"
    with edge():
        fresh, total = fresh_bytecode(sources)
        writes = "PYTHONDONTWRITEBYTECODE set" if sys.flags.dont_write_bytecode else "writes pyc"
        timing = time_process(argv, runs=int(runs), cwd=ROOT)
        print(
            timing.line(
                f"{label}, as this environment is ({writes}; "
                f"{fresh}/{total} of tasks.py and pipeline/ had fresh bytecode)"
            )
        )
        if not compile_bytecode([ROOT / "tasks.py", ROOT / "pipeline"]):
            raise Exit("error: tasks.py or pipeline/ does not compile", code=1)
        timing = time_process(argv, runs=int(runs), cwd=ROOT)
        print(timing.line(f"{label}, bytecode cached (compileall first)", target=0.3))
        floor = time_process([sys.executable, "-c", "import invoke"], runs=int(runs), cwd=ROOT)
        print(floor.line('floor: python -c "import invoke"'))


bench.add_task(bench_tags)


@task(
    name="gateway",
    help={
        "seconds": "seconds of wrk load per target (default 5)",
        "connections": "concurrent connections (default 64)",
        "container": "also run the gateway in the built image (build record) for the ratio",
        "rounds": "interleaved passes over every target; each figure is the median (default 3)",
    },
)
def bench_gateway(
    c: Context, seconds: float = 5, connections: int = 64, container: bool = True, rounds: int = 3
) -> None:
    """Load the gateway, nginx and plain Python proxies with wrk; print req/s, latency, ratios.

    The gateway runs with 1 and 2 workers, in and out of its container; every target proxies to
    one upstream on 127.0.0.1. Also printed: the CPU per request of the proxy and of the load
    (wrk and the upstream), and the 2w/1w ceiling those allow on this machine's CPUs."""
    from pipeline.bench import gateway as bench_gw

    with edge():
        image = None
        if container:
            from pipeline.build.record import BuildRecord

            image = BuildRecord.read(ROOT / settings(c).record).reference
        results = bench_gw.run(float(seconds), int(connections), image, rounds=int(rounds))
        print(bench_gw.format_table(results))


bench.add_task(bench_gateway)


@task(
    name="build",
    help={"starts": "container starts timed for start-to-healthy (default 5)"},
)
def bench_build(c: Context, starts: int = 5) -> None:
    """Print build figures: cold vs. cached rebuilds, multi-arch cost, image size, start time."""
    from pipeline.bench.build import run_bench

    with edge():
        figures = run_bench(ROOT, settings(c), os.environ, starts=int(starts), report=print)
        over = [f.name for f in figures if not f.ok]
        print(f"{len(figures) - len(over)}/{len(figures)} figures within target")


bench.add_task(bench_build)


# --- checks ---


@task(
    help={
        "engine": "run the tests that need Docker and the registry (CI requires them)",
        "k": "only tests matching this pytest -k expression",
        "path": "test file or directory (default: tests/)",
        "lint": "run ruff and mypy first (default: yes)",
    }
)
def test(
    c: Context, engine: bool = True, k: str | None = None, path: str = "tests", lint: bool = True
) -> None:
    """Lint (ruff check, ruff format --check, mypy --strict on pipeline/) and run the tests."""
    from pipeline.proc import stream

    steps: list[list[str]] = []
    if lint:
        steps += [
            [sys.executable, "-m", "ruff", "check", "."],
            [sys.executable, "-m", "ruff", "format", "--check", "."],
            [sys.executable, "-m", "mypy"],
        ]
    pytest = [sys.executable, "-m", "pytest", path]
    if not engine:
        pytest += ["-m", "not engine"]
    if k:
        pytest += ["-k", k]
    steps.append(pytest)
    with edge():
        for argv in steps:
            code = stream(argv, cwd=ROOT)
            if code != 0:
                raise Exit(f"error: {' '.join(argv[2:4])} failed (exit code {code})", code=code)


# --- the namespace ---

ns = Collection()
ns.add_collection(docker)
ns.add_collection(deploy)
ns.add_collection(lint)
ns.add_collection(bench)
ns.add_task(report)
ns.add_task(notify)
ns.add_task(test)
ns.configure({"docker": _defaults()})
