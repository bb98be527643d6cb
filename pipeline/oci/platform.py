"""Platforms: ``os/arch[/variant]``, one vocabulary for the engine, the build, the scan and the
merge (``x86_64`` is ``amd64``, ``arm64/v8`` is ``arm64``), parsed and validated once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipeline.errors import PipelineError, UsageError

ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def normalize_platform(os_: str, arch: str, variant: str = "") -> str:
    """``linux``/``x86_64`` (as a daemon reports itself) as ``linux/amd64``; ``arm64/v8``, the
    only arm64 variant, is plain ``linux/arm64``."""
    arch = ARCH.get(arch.lower(), arch.lower())
    variant = "" if (arch, variant) == ("arm64", "v8") else variant
    return f"{os_.lower()}/{arch}" + (f"/{variant}" if variant else "")


def platform_key(platform: str) -> str:
    """What two spellings of one platform share: ``linux/arm64/v8`` is ``linux/arm64``."""
    return platform.removesuffix("/v8") if platform.startswith("linux/arm64") else platform


def parse_platforms(
    value: str | Iterable[str], *, what: str, error: type[PipelineError] = UsageError
) -> tuple[str, ...]:
    """``linux/amd64,linux/arm64`` or a list of them (each may hold commas): validated
    ``OS/ARCH[/VARIANT]`` names, duplicates dropped, order kept. ``what`` names the source
    (a flag, or the setting) in the error."""
    items = [value] if isinstance(value, str) else [str(v) for v in value]
    platforms = [p.strip() for item in items for p in item.split(",") if p.strip()]
    for platform in platforms:
        parts = platform.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise error(
                f"{what}: {platform!r} is not OS/ARCH[/VARIANT]", hint="use e.g. linux/arm64"
            )
    return tuple(dict.fromkeys(platforms))


def platform_of(spec: Mapping[str, Any]) -> str:
    """``os/architecture[/variant]`` of a descriptor's ``platform`` or an image config; ``""``
    when either is missing."""
    parts = [str(spec.get("os", "")), str(spec.get("architecture", ""))]
    if spec.get("variant"):
        parts.append(str(spec["variant"]))
    return "/".join(parts) if all(parts[:2]) else ""


def pick_platform(platforms: Sequence[str], host: str) -> str:
    """The platform to scan: the host's when the image has it, else the image's first one."""
    if not platforms or host in platforms:
        return host
    return platforms[0]
