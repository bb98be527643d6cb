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

from pipeline.config import Settings, invoke_defaults, load_pyproject
from pipeline.errors import PipelineError

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
    from pipeline.context import resolve
    from pipeline.errors import UsageError
    from pipeline.versioning import compute_tags

    with edge():
        if format not in ("text", "json", "github"):
            raise UsageError(f"--format {format!r}: expected text, json or github")
        context = resolve(
            os.environ,
            Path.cwd(),
            event=event,
            ref=ref,
            sha=sha,
            pr=int(pr) if pr is not None else None,
            default_branch=default_branch,
        )
        result = compute_tags(context, settings(c, image=image), released or ())
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

# --- docker: scan (docker.scan, docker.rescan) ---

# --- docker: registry (docker.push, docker.sign, docker.promote, docker.rollback, docker.prune,
# docker.publish, docker.outdated) ---

# --- deploy and report (deploy.*, report) ---

deploy = Collection("deploy")

# --- lint (lint.actions, lint.dockerfile) ---

lint = Collection("lint")

# --- bench (bench.gateway, bench.build) ---

bench = Collection("bench")


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
ns.add_task(test)
ns.configure({"docker": _defaults()})
