"""The base image: ``[tool.pipeline] base_image`` or the Dockerfile's ``ARG BASE_IMAGE``, resolved
to a digest (through a Docker Hub mirror when the daemon has one)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.config import Settings
from pipeline.errors import EngineError, UsageError
from pipeline.oci.labels import LABEL
from pipeline.oci.reference import DOCKER_HUB, parse_reference

BASE_ARG = "BASE_IMAGE"


@dataclass(frozen=True)
class BaseImage:
    """The base the build used: its name and the index digest it resolved to."""

    name: str
    digest: str

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.digest}"

    @property
    def labels(self) -> dict[str, str]:
        return {f"{LABEL}base.name": self.name, f"{LABEL}base.digest": self.digest}


def qualified_name(name: str) -> str:
    """``python:3.11-slim`` -> ``docker.io/library/python:3.11-slim`` (the base.name label)."""
    return str(parse_reference(name))


def mirror_reference(name: str, mirrors: Sequence[str]) -> str:
    """Where the digest of a Docker Hub ``name`` is read: the daemon's first mirror (the
    build resolves Docker Hub names through it), else the name itself."""
    ref = parse_reference(name)
    if ref.host != DOCKER_HUB or not mirrors:
        return str(ref)
    host = re.sub(r"^[a-z]+://", "", mirrors[0]).rstrip("/")
    return str(replace(ref, host=host))


def dockerfile_base(text: str) -> str:
    """The image a Dockerfile's ``ARG BASE_IMAGE=...`` default stands for, or ``""``. A default
    that names a stage (``FROM python:3.11-slim@sha256:... AS pinned-base``, the shape Dependabot
    can update) stands for that stage's image."""
    match = re.search(rf"^\s*ARG\s+{BASE_ARG}=(\S+)\s*$", text, flags=re.MULTILINE)
    if not match:
        return ""
    default = match.group(1).strip("\"'")
    stage = re.search(
        rf"^\s*FROM\s+(?:--\S+\s+)*(\S+)\s+AS\s+{re.escape(default)}\s*$",
        text,
        flags=re.MULTILINE | re.IGNORECASE,
    )
    return stage.group(1) if stage else default


def base_name(settings: Settings, root: Path) -> str:
    """The base to build on: ``[tool.pipeline] base_image`` when set, else the Dockerfile's
    own pinned ``ARG BASE_IMAGE`` default (what dependabot keeps current)."""
    if settings.base_image.strip():
        return settings.base_image.strip()
    dockerfile = root / settings.dockerfile
    name = dockerfile_base(dockerfile.read_text(encoding="utf-8")) if dockerfile.is_file() else ""
    if not name:
        raise UsageError(
            f"no base image: {settings.dockerfile} has no `ARG {BASE_ARG}=` default",
            hint="add one (pinned by digest), or set [tool.pipeline] base_image",
        )
    return name


def resolve_base(name: str, mirrors: Sequence[str]) -> BaseImage:
    """The base's index digest, read from the registry the daemon pulls it from."""
    from pipeline import engine

    if not name.strip():
        raise UsageError("[tool.pipeline] base_image: must be a non-empty image name")
    pinned = parse_reference(name)
    if pinned.digest:
        return BaseImage(str(replace(pinned, digest="")), pinned.digest)
    where = mirror_reference(name, mirrors)
    try:
        digest = engine.index_digest(where)
    except EngineError as exc:
        raise EngineError(
            f"cannot resolve the base image {name} ({where})",
            stderr=exc.stderr,
            hint="check the registry (mirror) that serves it, or set [tool.pipeline] base_image",
        ) from None
    return BaseImage(qualified_name(name), digest)
