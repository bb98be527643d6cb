"""``docker.build``: flags and settings become a build plan (pure, table-tested), the plan runs
through ``pipeline.engine`` (buildx via python-on-whales), and the result is the build record,
``build/image.toml``, that every later task reads instead of recomputing."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.build.base import BASE_ARG, BaseImage
from pipeline.build.cache import CacheSpec, cache_spec
from pipeline.config import Settings
from pipeline.engine.cli import DOCKER_DRIVER
from pipeline.errors import UsageError
from pipeline.oci.labels import ImageTags
from pipeline.oci.platform import parse_platforms, platform_key

if TYPE_CHECKING:
    pass

PROGRESS = ("auto", "plain", "tty", "quiet")
CA_VARIABLES = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE")
CA_SECRET_ID = "ca"
DIGESTS_DIR = "build/digests"


# --- the plan (pure) ---


@dataclass(frozen=True)
class BuildOptions:
    """The flags of ``docker.build``."""

    platforms: tuple[str, ...] = ()
    push: bool = False
    load: bool = False
    cache: str | None = None
    builder: str | None = None
    target: str | None = None
    build_args: tuple[str, ...] = ()
    progress: str = "auto"
    no_cache: bool = False
    push_by_digest: bool = False
    digests_dir: str = DIGESTS_DIR


@dataclass(frozen=True)
class BuildPlan:
    """Everything one ``docker buildx build`` call needs, and nothing that is not decided yet."""

    context: Path
    dockerfile: Path
    tags: tuple[str, ...]
    labels: dict[str, str]
    platforms: tuple[str, ...]
    build_args: dict[str, str]
    push: bool
    load: bool
    cache: CacheSpec
    secrets: tuple[str, ...] = ()
    builder: str | None = None
    target: str | None = None
    progress: str = "auto"
    no_cache: bool = False
    base: BaseImage | None = None
    image: str = ""
    push_by_digest: bool = False
    # buildx's docker driver cannot push by digest: build into the local (containerd) store under
    # ``store_tag``, then upload that index by digest (``pipeline.registry.upload``).
    via_store: bool = False
    # ``[tool.pipeline] provenance``: max (every build arg and step), min, or off.
    provenance_mode: str = "max"

    @property
    def store_tag(self) -> str:
        """The local-only tag of a push by digest through the store (removed afterwards)."""
        platform = digest_file_name(self.platforms[0]) if self.platforms else "image"
        return f"{self.image}:pipeline-digest-{platform}"

    @property
    def provenance(self) -> dict[str, str] | bool:
        """buildx's ``--provenance``: an SLSA provenance attestation per platform, on loads
        and pushes alike (the containerd store keeps it; ``docker.push`` uploads it). It
        records the invocation, so each build's index digest differs even when its platform
        manifests are identical: ``docker.push`` compares platform manifests, not the index,
        to tell a re-run of the same image from another image."""
        return {"mode": self.provenance_mode} if self.provenance_mode != "off" else False

    def buildx_options(self) -> dict[str, Any]:
        """Keyword arguments of python-on-whales' ``docker.buildx.build`` (without context,
        progress and metadata file, which the engine adds)."""
        options: dict[str, Any] = {
            "file": str(self.dockerfile),
            "tags": list(self.tags),
            "labels": dict(self.labels),
            "platforms": list(self.platforms),
            "build_args": dict(self.build_args),
            "push": self.push,
            "load": self.load,
            "provenance": self.provenance,
            "sbom": False,
            "secrets": list(self.secrets),
            "cache": not self.no_cache,
        }
        if self.push_by_digest:
            # One platform's image, pushed under its digest only: no tag is written until
            # ``docker.merge`` joins every platform into the tagged index.
            options["push"] = False
            if self.via_store:
                options["tags"] = [self.store_tag]
                options["load"] = True
            else:
                options["tags"] = []
                options["load"] = False
                options["output"] = digest_output(self.image)
        if self.cache.imports:
            options["cache_from"] = [dict(entry) for entry in self.cache.imports]
        if self.cache.export is not None:
            options["cache_to"] = dict(self.cache.export)
        if self.builder:
            options["builder"] = self.builder
        if self.target:
            options["target"] = self.target
        return options


def plan_build(
    *,
    root: Path,
    settings: Settings,
    tags: ImageTags,
    options: BuildOptions,
    environ: Mapping[str, str],
    host_platform: str,
    base: BaseImage | None,
    source_date_epoch: int | None = None,
) -> BuildPlan:
    """Flags, settings, tags and the environment's facts become a plan; bad input is a
    ``UsageError`` before anything runs. ``source_date_epoch`` (the commit time) pins the
    image's timestamps, so two builds of one commit give the same image manifests."""
    if options.progress not in PROGRESS:
        raise UsageError(f"--progress {options.progress!r}: expected one of {', '.join(PROGRESS)}")
    dockerfile = (root / settings.dockerfile).resolve()
    context = (root / settings.context).resolve()
    build_args = parse_build_args(options.build_args)
    if BASE_ARG in build_args:
        raise UsageError(
            f"--build-arg {BASE_ARG}: the base is a setting, resolved to a digest per build",
            hint="set [tool.pipeline] base_image",
        )
    labels = dict(tags.labels)
    if base is not None:
        build_args[BASE_ARG] = base.reference
        labels.update(base.labels)
    if source_date_epoch is not None:
        build_args.setdefault("SOURCE_DATE_EPOCH", str(source_date_epoch))
    platforms = choose_platforms(options.platforms, settings, environ, host_platform)
    load = _check_push_by_digest(options, platforms)
    return BuildPlan(
        context=context,
        dockerfile=dockerfile,
        tags=tags.tags,
        labels=labels,
        platforms=platforms,
        build_args=build_args,
        push=options.push,
        load=load,
        cache=cache_spec(
            options.cache, cache_dir=root / settings.cache_dir, environ=environ, platforms=platforms
        ),
        secrets=ca_secrets(environ),
        builder=options.builder or None,
        target=options.target or None,
        progress=options.progress,
        no_cache=options.no_cache,
        base=base,
        image=tags.image,
        push_by_digest=options.push_by_digest,
        provenance_mode=provenance_mode(settings.extra.get("provenance", "max")),
    )


def _check_push_by_digest(options: BuildOptions, platforms: Sequence[str]) -> bool:
    """Whether the image is loaded: by default unless pushed; never for a push by digest,
    which is one pushed platform."""
    if not options.push_by_digest:
        return options.load or not options.push
    if not options.push:
        raise UsageError("--push-by-digest needs --push", hint="add --push")
    if options.load:
        raise UsageError("--push-by-digest cannot --load: the image goes to the registry only")
    if len(platforms) != 1:
        raise UsageError(
            f"--push-by-digest builds one platform per job, not {len(platforms)} "
            f"({', '.join(platforms)})",
            hint="pass a single --platform; `invoke docker.merge` joins the digests",
        )
    return False


PROVENANCE_MODES = ("max", "min", "off")


def provenance_mode(value: object) -> str:
    """``[tool.pipeline] provenance`` (or ``INVOKE_DOCKER_PROVENANCE``): max, min or off."""
    text = str(value).strip().lower()
    if text in ("false", "0", "no"):
        text = "off"
    if text not in PROVENANCE_MODES:
        raise UsageError(
            f"[tool.pipeline] provenance: {value!r} is not one of {', '.join(PROVENANCE_MODES)}",
            hint="max records every build argument and step; off attaches no attestation",
        )
    return text


def digest_output(image: str) -> dict[str, str]:
    """buildx's ``--output`` for one platform pushed by digest (no tag), for ``docker.merge``."""
    return {
        "type": "image",
        "name": image,
        "push-by-digest": "true",
        "name-canonical": "true",
        "push": "true",
    }


def digest_file_name(platform: str) -> str:
    """``linux/arm64`` -> ``linux-arm64``: the file a per-platform digest is written to."""
    return platform.replace("/", "-")


def write_digest_file(directory: Path, platform: str, digest: str) -> Path:
    """Write ``digest`` to ``directory/<os>-<arch>`` (a workflow uploads it as an artifact)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / digest_file_name(platform)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(digest + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def choose_platforms(
    requested: Sequence[str], settings: Settings, environ: Mapping[str, str], host: str
) -> tuple[str, ...]:
    """``--platform`` values (repeatable, or comma-separated); else every platform of
    ``[tool.pipeline] platforms`` in GitHub Actions; else the host's."""
    items = parse_platforms(requested, what="--platform")
    if not items:
        if environ.get("GITHUB_ACTIONS") == "true":
            return settings.platforms
        return (host,)
    return items


def parse_build_args(items: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (``KEY`` alone is an error, not an inherited variable)."""
    args: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UsageError(f"--build-arg {item!r}: expected KEY=VALUE")
        args[key] = value
    return args


def ca_bundle(environ: Mapping[str, str]) -> Path | None:
    """The host's CA bundle (``SSL_CERT_FILE``, ``PIP_CERT`` or ``REQUESTS_CA_BUNDLE``)."""
    for name in CA_VARIABLES:
        value = environ.get(name, "").strip()
        if not value:
            continue
        path = Path(value)
        if not path.is_file():
            raise UsageError(f"{name}={value}: no such file", hint=f"unset {name} or fix its path")
        return path
    return None


def ca_secrets(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The CA bundle as a BuildKit secret (mounted only while a RUN step needs it)."""
    bundle = ca_bundle(environ)
    return (f"id={CA_SECRET_ID},src={bundle}",) if bundle is not None else ()


def platform_supported(platform: str, available: Sequence[str]) -> bool:
    """Whether a builder listing ``available`` builds ``platform`` (arm64 == arm64/v8)."""
    return platform_key(platform) in {platform_key(a) for a in available}


def load_problem(
    platforms: Sequence[str], driver: str, containerd_store: bool, builder: str
) -> str | None:
    """Why loading ``platforms`` into the local store cannot work, or None."""
    if len(platforms) < 2:
        return None
    if driver == DOCKER_DRIVER and containerd_store:
        return None
    store = "the classic image store" if driver == DOCKER_DRIVER else f"the {driver} driver"
    return (
        f"builder {builder} ({store}) cannot load {len(platforms)} platforms into the local store"
    )


# --- reading buildx's plain progress (pure) ---


# --- the build context (pure) ---


# --- running it (I/O through pipeline.engine) ---
