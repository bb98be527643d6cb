"""The daemon and buildx: platform, image store, mirrors, builder and its platforms."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from python_on_whales import DockerClient, DockerException

from pipeline.engine.cli import UNREACHABLE_HINT, docker, fail, is_unreachable, stderr_of
from pipeline.errors import EngineError
from pipeline.oci.platform import normalize_platform

MIN_BUILDX = (0, 13)

_VERSION = re.compile(r"\bv?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class DaemonInfo:
    """What the build needs to know about the engine."""

    platform: str  # e.g. linux/amd64
    containerd_store: bool  # the containerd image store (can hold multi-platform images)
    version: str
    mirrors: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuilderInfo:
    name: str
    driver: str
    platforms: tuple[str, ...]


def daemon_info(client: DockerClient | None = None) -> DaemonInfo:
    """The daemon's platform and image store; ``EngineError`` when it cannot be reached."""
    client = client or docker()
    try:
        info = client.system.info()
    except DockerException as exc:
        raise EngineError(
            "the Docker daemon is unreachable",
            argv=exc.docker_command,
            returncode=exc.return_code,
            hint=UNREACHABLE_HINT,
        ) from None
    except FileNotFoundError:
        raise EngineError("the docker CLI is not installed", hint="install Docker") from None

    driver_status = [tuple(x) for x in (info.driver_status or [])]
    containerd = any(
        key == "driver-type" and "containerd.snapshotter" in str(value)
        for key, value in driver_status
    )
    registry: Any = info.registry_config
    if isinstance(registry, dict):
        raw_mirrors = registry.get("Mirrors")
    else:
        raw_mirrors = getattr(registry, "mirrors", None)
    mirrors = tuple(str(m) for m in (raw_mirrors or []))
    return DaemonInfo(
        platform=normalize_platform(str(info.os_type or "linux"), str(info.architecture)),
        containerd_store=containerd,
        version=str(info.server_version or ""),
        mirrors=mirrors,
    )


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``github.com/docker/buildx v0.13.1 abc`` -> (0, 13, 1)."""
    match = _VERSION.search(text)
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def buildx_version(client: DockerClient | None = None) -> tuple[int, int, int]:
    """buildx's version; ``EngineError`` when it is missing or older than 0.13."""
    client = client or docker()
    hint = "install the docker-buildx plugin, 0.13 or newer"
    try:
        text = client.buildx.version()
    except DockerException as exc:
        raise EngineError(
            "docker buildx is not installed", argv=exc.docker_command, hint=hint
        ) from None
    version = parse_version(text)
    if version is None:
        raise EngineError(f"cannot read the buildx version from {text!r}", hint=hint)
    if version[:2] < MIN_BUILDX:
        shown = ".".join(map(str, version))
        raise EngineError(f"docker buildx {shown} is older than 0.13", hint=hint)
    return version


def builder_info(name: str | None = None, client: DockerClient | None = None) -> BuilderInfo:
    """The builder's driver and platforms (``name`` None: the current builder)."""
    client = client or docker()
    try:
        builder = client.buildx.inspect(name, bootstrap=True) if name else client.buildx.inspect()
    except DockerException as exc:
        err = stderr_of(exc)
        if is_unreachable(err):
            raise fail(exc, "") from None
        raise EngineError(
            f"no usable buildx builder {name or '(current)'}",
            argv=exc.docker_command,
            stderr=err,
            hint="list builders with `docker buildx ls`, or create one with `docker buildx create`",
        ) from None
    platforms: list[str] = []
    for node in builder.nodes or []:
        for platform in node.platforms or []:
            if platform not in platforms:
                platforms.append(platform)
    return BuilderInfo(
        name=str(builder.name or name or "default"),
        driver=str(builder.driver or ""),
        platforms=tuple(platforms),
    )
