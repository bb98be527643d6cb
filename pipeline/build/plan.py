"""``docker.build``: flags and settings become a build plan (pure, table-tested), the plan runs
through ``pipeline.engine`` (buildx via python-on-whales), and the result is the build record,
``build/image.toml``, that every later task reads instead of recomputing."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.build.record import BuildRecord
from pipeline.config import Settings
from pipeline.engine.cli import DOCKER_DRIVER
from pipeline.errors import EngineError, UsageError
from pipeline.gitref import ReleaseContext
from pipeline.oci.labels import LABEL, ImageTags
from pipeline.oci.platform import parse_platforms, platform_key

if TYPE_CHECKING:
    from pipeline.engine import BuilderInfo, DaemonInfo

PROGRESS = ("auto", "plain", "tty", "quiet")
CA_VARIABLES = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE")
CA_SECRET_ID = "ca"
BASE_ARG = "BASE_IMAGE"
DOCKER_HUB = "docker.io"
CONTEXT_LIMIT = 1_000_000
DIGESTS_DIR = "build/digests"
_UNITS = {"B": 1, "kB": 1000, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20, "GB": 10**9}


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


@dataclass(frozen=True)
class CacheSpec:
    """``--cache-from`` entries and the ``--cache-to`` entry (None: no export)."""

    imports: tuple[dict[str, str], ...] = ()
    export: dict[str, str] | None = None
    kind: str = "none"


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
        and pushes alike (the containerd store keeps it; ``docker push`` uploads it). It
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
    push = options.push
    load = options.load or not options.push
    platforms = choose_platforms(options.platforms, settings, environ, host_platform)
    if options.push_by_digest:
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
        load = False
    return BuildPlan(
        context=context,
        dockerfile=dockerfile,
        tags=tags.tags,
        labels=labels,
        platforms=platforms,
        build_args=build_args,
        push=push,
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


# Every cache export: all layers (max), and a cache outage never fails the build.
EXPORT = {"mode": "max", "ignore-error": "true"}


def cache_spec(
    value: str | None,
    *,
    cache_dir: Path,
    environ: Mapping[str, str],
    platforms: Sequence[str] = (),
) -> CacheSpec:
    """Where layers are cached between builds.

    default: GitHub's cache when its runtime variables are set (a job in Actions), else the
    local directory ``cache_dir``; ``gha`` or ``gha:SCOPE``; ``registry:REF``; ``local:DIR``
    or a path; ``none``. GitHub's cache has one scope per platform (``linux-amd64``), so
    per-platform jobs do not overwrite each other and a multi-platform build reads them all.
    """
    text = (value or "").strip()
    if not text:
        # The cache service v1 gives ACTIONS_CACHE_URL, v2 ACTIONS_RESULTS_URL.
        service = environ.get("ACTIONS_CACHE_URL") or environ.get("ACTIONS_RESULTS_URL")
        gha = environ.get("ACTIONS_RUNTIME_TOKEN") and service
        text = "gha" if gha else f"local:{cache_dir}"
    if text in ("none", "off"):
        return CacheSpec()
    if text == "gha" or text.startswith("gha:"):
        scope = text.removeprefix("gha").removeprefix(":").strip()
        per_platform = [p.replace("/", "-") for p in platforms] or ["buildkit"]
        scopes = [scope] if scope else per_platform
        imports = tuple({"type": "gha", "scope": s} for s in scopes)
        export = {"type": "gha", "scope": "+".join(scopes), **EXPORT}
        return CacheSpec(imports, export, "gha")
    if text.startswith("registry:"):
        ref = text.removeprefix("registry:").strip()
        if not ref or " " in ref:
            raise UsageError(f"--cache {text!r}: expected registry:HOST/REPO:TAG")
        return CacheSpec(
            ({"type": "registry", "ref": ref},),
            {"type": "registry", "ref": ref, **EXPORT},
            "registry",
        )
    if text.startswith("type="):
        raise UsageError(
            f"--cache {text!r}: expected a directory, registry:REF, gha or none",
        )
    directory = Path(text.removeprefix("local:")).expanduser()
    if not str(directory):
        raise UsageError("--cache local: needs a directory")
    directory = directory.resolve()
    imports = (
        ({"type": "local", "src": str(directory)},) if (directory / "index.json").exists() else ()
    )
    return CacheSpec(imports, {"type": "local", "dest": str(directory), **EXPORT}, "local")


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


def qualified_name(name: str) -> str:
    """``python:3.11-slim`` -> ``docker.io/library/python:3.11-slim`` (the base.name label)."""
    name = name.strip()
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return name
    if not rest:
        return f"{DOCKER_HUB}/library/{name}"
    return f"{DOCKER_HUB}/{name}"


def mirror_reference(name: str, mirrors: Sequence[str]) -> str:
    """Where the digest of a Docker Hub ``name`` is read: the daemon's first mirror (the
    build resolves Docker Hub names through it), else the name itself."""
    full = qualified_name(name)
    if not full.startswith(f"{DOCKER_HUB}/") or not mirrors:
        return full
    host = re.sub(r"^[a-z]+://", "", mirrors[0]).rstrip("/")
    return f"{host}/{full.removeprefix(DOCKER_HUB + '/')}"


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

_STEP = re.compile(r"^#(\d+) \[([^\]]+)\] (.*)$")
_TRANSFER = re.compile(r"transferring context: ([\d.]+)\s*([kKMG]i?B|B)")


@dataclass
class Progress:
    """What the plain progress output says: steps, cached steps, context bytes sent."""

    steps: dict[str, str] = field(default_factory=dict)
    cached: set[str] = field(default_factory=set)
    context_bytes: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return len(self.steps)

    @property
    def cached_steps(self) -> int:
        return len(self.cached & set(self.steps))


def read_progress(lines: Iterable[str]) -> Progress:
    """Dockerfile steps are vertices named ``[stage n/m] ...`` (not ``[internal]`` ones, and
    not ``FROM``, which is resolved rather than run or cached); a cached one prints
    ``#N CACHED``; the build context vertex prints its transfer size."""
    progress = Progress()
    internal: dict[str, str] = {}
    for raw in lines:
        line = raw.rstrip()
        match = _STEP.match(line)
        if match:
            vertex, where, what = match.groups()
            if where == "internal":
                internal[vertex] = what
            elif re.search(r"\b\d+/\d+$", where) and not what.startswith("FROM "):
                progress.steps.setdefault(vertex, f"[{where}] {what}")
            continue
        vertex, _, rest = line.removeprefix("#").partition(" ")
        if rest == "CACHED":
            progress.cached.add(vertex)
        elif rest.startswith("ERROR") or line.startswith("ERROR"):
            progress.errors.append(line)
        if internal.get(vertex) == "load build context":
            size = _TRANSFER.search(rest)
            if size:
                progress.context_bytes = int(float(size[1]) * _UNITS[size[2]])
    return progress


def display(progress: str) -> Callable[[str], None] | None:
    """How build output reaches the terminal: every line (plain), step names (auto/tty),
    nothing (quiet)."""
    if progress == "quiet":
        return None
    if progress == "plain":
        return lambda line: print(line, flush=True)
    seen: set[str] = set()

    def show(line: str) -> None:
        match = _STEP.match(line)
        if match and match[2] != "internal" and match[1] not in seen:
            seen.add(match[1])
            print(f"  {match[2]} {match[3][:100]}", flush=True)
        elif line.startswith("ERROR") or " ERROR" in line[:12]:
            print(line, flush=True)

    return show


# --- the build context (pure) ---


def read_dockerignore(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line)
    return patterns


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex on slash paths."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            if body.startswith("^"):
                body = "!" + body[1:]
            out.append("[^" + re.escape(body[1:]) + "]" if body.startswith("!") else "[")
            if not body.startswith("!"):
                out.append(re.escape(body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + "$")


def ignored(path: str, patterns: Sequence[str]) -> bool:
    """Whether ``path`` (relative, slash-separated) is left out of the context: the last
    matching pattern wins, ``!`` re-includes, a pattern matching a parent matches the path."""
    result = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = os.path.normpath(raw[1:] if negate else raw).lstrip("/")
        if pattern == ".":
            pattern = "*"
        regex = _pattern_regex(pattern)
        if any(regex.match(prefix) for prefix in prefixes):
            result = not negate
    return result


def context_files(root: Path, patterns: Sequence[str]) -> dict[str, int]:
    """Files the build context sends, with their sizes."""
    files: dict[str, int] = {}
    for directory, dirnames, filenames in os.walk(root):
        rel_dir = Path(directory).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        keep = []
        for name in dirnames:
            if not _dir_excluded(rel_dir + name, patterns):
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            rel = rel_dir + name
            if not ignored(rel, patterns):
                files[rel] = (Path(directory) / name).lstat().st_size
    return files


def _dir_excluded(rel: str, patterns: Sequence[str]) -> bool:
    """A directory can be skipped when it is ignored and no ``!`` pattern could reach inside."""
    if not ignored(rel, patterns):
        return False
    for raw in patterns:
        if raw.startswith("!"):
            inner = raw[1:].lstrip("/")
            if inner.startswith(rel + "/") or fnmatch.fnmatch(rel, inner.split("/")[0]):
                return False
    return True


def context_size(root: Path, ignore_file: Path | None = None) -> int:
    """Bytes of the build context after ``.dockerignore``."""
    patterns = read_dockerignore(ignore_file or root / ".dockerignore")
    return sum(context_files(root, patterns).values())


def prune_local_cache(directory: Path, older_than: float) -> int:
    """BuildKit's local cache exporter rewrites ``index.json`` but never deletes a blob, so
    the directory grows with every build: delete the blobs the index no longer reaches (and
    only those written before ``older_than``, so a concurrent export keeps its own). Returns
    the bytes freed."""
    blobs = directory / "blobs" / "sha256"
    try:
        index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    reached: set[str] = set()
    pending = [str(m.get("digest", "")) for m in index.get("manifests") or []]
    while pending:
        digest = pending.pop()
        name = digest.removeprefix("sha256:")
        if not name or name in reached:
            continue
        reached.add(name)
        path = blobs / name
        if path.is_file() and path.stat().st_size < 4 * 1024 * 1024:
            with path.open("rb") as fh:
                if fh.read(1) != b"{":
                    continue  # a layer, not a manifest
            try:
                node = json.loads(path.read_bytes())
            except ValueError:
                continue
            if isinstance(node, dict):
                for key in ("manifests", "layers"):
                    pending += [str(d.get("digest", "")) for d in node.get(key) or []]
                if isinstance(node.get("config"), dict):
                    pending.append(str(node["config"].get("digest", "")))
    freed = 0
    for path in blobs.iterdir() if blobs.is_dir() else ():
        stat = path.stat()
        if path.name not in reached and stat.st_mtime < older_than:
            path.unlink()
            freed += stat.st_size
    return freed


STAMP = "pipeline-inputs.sha256"


def inputs_digest(plan: BuildPlan) -> str:
    """What the layers of a build depend on: the Dockerfile, every file of the context, the
    build arguments (the base digest among them), the platforms and the target. Equal digests
    mean a local cache export would write what the directory already holds."""
    digest = hashlib.sha256()
    digest.update(plan.dockerfile.read_bytes())
    files = context_files(plan.context, read_dockerignore(plan.context / ".dockerignore"))
    for name in sorted(files):
        digest.update(b"\0" + name.encode() + b"\0")
        digest.update((plan.context / name).read_bytes())
    facts = {
        "build_args": plan.build_args,
        "platforms": list(plan.platforms),
        "target": plan.target or "",
    }
    digest.update(json.dumps(facts, sort_keys=True).encode())
    return digest.hexdigest()


def cache_is_current(directory: Path, digest: str) -> bool:
    """Whether the local cache directory was last exported for exactly these inputs."""
    try:
        recorded = (directory / STAMP).read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return recorded == digest and (directory / "index.json").is_file()


# --- running it (I/O through pipeline.engine) ---


@dataclass
class BuildResult:
    record: BuildRecord
    plan: BuildPlan
    progress: Progress
    lines: list[str]


def preflight(
    plan_options: BuildOptions, settings: Settings, root: Path
) -> tuple[DaemonInfo, BuilderInfo]:
    """The checks a user fixes one by one: the Dockerfile, the daemon, buildx, the builder.
    Returns the daemon's and the builder's facts."""
    dockerfile = root / settings.dockerfile
    if not dockerfile.is_file():
        raise UsageError(
            f"no Dockerfile at {settings.dockerfile}",
            hint="create it, or set [tool.pipeline] dockerfile",
        )
    from pipeline import engine

    daemon = engine.daemon_info()
    engine.buildx_version()
    builder = engine.builder_info(plan_options.builder)
    return daemon, builder


def dockerfile_base(text: str) -> str:
    """The default of ``ARG BASE_IMAGE=...`` in a Dockerfile, or ``""``."""
    match = re.search(rf"^\s*ARG\s+{BASE_ARG}=(\S+)\s*$", text, flags=re.MULTILINE)
    return match.group(1).strip("\"'") if match else ""


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
    if "@" in name:
        bare, _, digest = name.partition("@")
        return BaseImage(qualified_name(bare), digest)
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


def push_from_store(plan: BuildPlan, settings: Settings, environ: Mapping[str, str]) -> str:
    """Upload the image built into the local store under ``plan.store_tag`` by digest only;
    returns its index digest."""
    from pipeline import engine
    from pipeline.oci.reference import parse_reference
    from pipeline.registry.client import client_for
    from pipeline.registry.upload import push_layout

    digest = engine.local_digest(plan.store_tag)
    files, _ = engine.saved_blobs(engine.save_stream(plan.store_tag), keep=lambda name, size: True)
    ref = parse_reference(plan.image)
    client = client_for(ref.host, extra=settings.extra, environ=environ)
    push_layout(files, digest, client, ref.repository, log=lambda line: None)
    return digest


def run_build(
    *,
    root: Path,
    settings: Settings,
    build_context: ReleaseContext,
    tags: ImageTags,
    options: BuildOptions,
    environ: Mapping[str, str],
    record_path: Path | None = None,
) -> BuildResult:
    """Check the engine, resolve the base, build, measure, and write the build record."""
    from pipeline import engine

    daemon, builder = preflight(options, settings, root)
    base = resolve_base(base_name(settings, root), daemon.mirrors)
    plan = plan_build(
        root=root,
        settings=settings,
        tags=tags,
        options=options,
        environ=environ,
        host_platform=daemon.platform,
        base=base,
        source_date_epoch=build_context.commit_time,
    )
    missing = [p for p in plan.platforms if not platform_supported(p, builder.platforms)]
    if missing:
        raise EngineError(
            f"builder {builder.name} cannot build {', '.join(missing)} "
            f"(it builds {', '.join(builder.platforms) or 'nothing'})",
            hint="install QEMU binfmt handlers, use another --builder, or drop that --platform",
        )
    if plan.push_by_digest and builder.driver == DOCKER_DRIVER:
        plan = replace(plan, via_store=True)
    if plan.load:
        problem = load_problem(
            plan.platforms, builder.driver, daemon.containerd_store, builder.name
        )
        if problem:
            raise EngineError(problem, hint="pass --push, or build a single --platform")
    stamp: tuple[Path, str] | None = None
    if plan.cache.export and plan.cache.kind == "local":
        directory = Path(plan.cache.export["dest"])
        directory.mkdir(parents=True, exist_ok=True)
        stamp = (directory / STAMP, inputs_digest(plan))
        if not plan.no_cache and cache_is_current(directory, stamp[1]):
            plan = replace(plan, cache=replace(plan.cache, export=None))  # nothing new to save
            stamp = None

    wall = time.time()
    started = time.monotonic()
    try:
        output = engine.build(plan.context, plan.buildx_options(), on_line=display(plan.progress))
        if plan.via_store:
            output.metadata["containerimage.digest"] = push_from_store(plan, settings, environ)
    finally:
        if plan.via_store:
            engine.remove_images([plan.store_tag])
    duration = time.monotonic() - started
    if stamp is not None:
        prune_local_cache(stamp[0].parent, older_than=wall)
        stamp[0].write_text(stamp[1] + "\n", encoding="utf-8")
    progress = read_progress(output.lines)
    digest = str(output.metadata.get("containerimage.digest", ""))
    reference = plan.tags[0]
    extra: dict[str, Any] = {}
    if plan.push_by_digest:
        if not digest.startswith("sha256:"):
            raise EngineError(
                f"buildx reported no digest for {plan.image} ({plan.platforms[0]})",
                hint="check the build output; the push by digest cannot be merged without it",
            )
        reference = f"{plan.image}@{digest}"
        written = write_digest_file(root / options.digests_dir, plan.platforms[0], digest)
        extra = {"push_by_digest": True, "digest_file": str(written)}
    if plan.push:
        sizes = engine.registry_sizes(reference)
    else:
        sizes = engine.local_sizes(reference, plan.platforms)
    record = BuildRecord(
        image=tags.image,
        version=tags.version,
        tags=list(tags.tag_names),
        platforms=list(plan.platforms),
        immutable=list(tags.immutable),
        unique=list(tags.unique),
        latest=tags.latest,
        labels=dict(plan.labels),
        digest=digest,
        loaded=plan.load,
        pushed=plan.push,
        revision=build_context.sha,
        ref=build_context.ref,
        event=build_context.event,
        duration_s=round(duration, 2),
        cached_steps=progress.cached_steps,
        total_steps=progress.total_steps,
        sizes=sizes,
        base_name=base.name,
        base_digest=base.digest,
        built_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        extra={
            "builder": builder.name,
            "driver": builder.driver,
            "cache": plan.cache.kind,
            "target": plan.target or "",
            "context_bytes": progress.context_bytes or 0,
            "dockerfile": settings.dockerfile,
            **extra,
        },
    )
    if record_path is not None:
        record.write(record_path)
    return BuildResult(record=record, plan=plan, progress=progress, lines=output.lines)
