"""The container engine: the one module that talks to python-on-whales (and so to the docker CLI).

Everything above it (build, containertest, push...) calls these small typed functions and gets
``EngineError`` with one actionable line when the engine says no. Nothing here decides policy.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_on_whales import DockerClient, DockerException

from pipeline.errors import EngineError, RegistryError
from pipeline.oci.manifest import (
    INDEX_TYPES,
    index_images,
    layout_images,
    layout_sizes,
    manifest_size,
)
from pipeline.oci.platform import normalize_platform, platform_of

MIN_BUILDX = (0, 13)
UNREACHABLE_HINT = "start Docker, or set DOCKER_HOST"
_VERSION = re.compile(r"\bv?(\d+)\.(\d+)(?:\.(\d+))?")


def docker(host: str | None = None) -> DockerClient:
    """A client for the engine of ``DOCKER_HOST``/the current context (or ``host``)."""
    return DockerClient(host=host) if host else DockerClient()


def _stderr(exc: DockerException) -> str:
    return (exc.stderr or exc.stdout or "").strip()


def _fail(exc: DockerException, message: str, hint: str = "") -> EngineError:
    """A python-on-whales failure as an ``EngineError``; an unreachable daemon says so."""
    err = _stderr(exc)
    if is_unreachable(err):
        return EngineError(
            "the Docker daemon is unreachable",
            argv=exc.docker_command,
            returncode=exc.return_code,
            hint=UNREACHABLE_HINT,
        )
    return EngineError(
        message, argv=exc.docker_command, returncode=exc.return_code, stderr=err, hint=hint
    )


def is_unreachable(stderr: str) -> bool:
    text = stderr.lower()
    return "cannot connect to the docker daemon" in text or ("error during connect" in text)


# --- daemon and buildx ---


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
        err = _stderr(exc)
        if is_unreachable(err):
            raise _fail(exc, "") from None
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


# --- registry look-ups (no pull) ---


def remote_digest(
    reference: str, client: DockerClient | None = None
) -> tuple[str, tuple[str, ...]]:
    """THE digest lookup: the digest of ``reference`` in its registry (an index's for a
    multi-platform image) and the image platforms that index lists, without pulling it."""
    manifest = raw_manifest(reference, client)
    digest = manifest.get("digest")
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise EngineError(f"the registry returned no digest for {reference}")
    return digest, tuple(index_images(manifest))


def index_digest(reference: str, client: DockerClient | None = None) -> str:
    """``remote_digest``'s digest alone."""
    return remote_digest(reference, client)[0]


def raw_manifest(reference: str, client: DockerClient | None = None) -> dict[str, Any]:
    """The manifest (or index) of ``reference`` as the registry has it, with its digest."""
    client = client or docker()
    argv = [*client.client_config.docker_cmd, "buildx", "imagetools", "inspect"]
    argv += ["--format", "{{json .Manifest}}", reference]
    text = _run_cli(argv, f"cannot inspect {reference} in its registry")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EngineError(f"unreadable manifest for {reference} ({exc})") from None
    if not isinstance(data, dict):
        raise EngineError(f"unreadable manifest for {reference}")
    return data


def registry_sizes(reference: str, client: DockerClient | None = None) -> dict[str, int]:
    """Compressed bytes (config + layers) per platform of an image in a registry."""
    client = client or docker()
    top = raw_manifest(reference, client)
    repository = strip_reference(reference)
    sizes: dict[str, int] = {}
    if top.get("mediaType") not in INDEX_TYPES:
        image = _raw(reference, client)
        return {"": manifest_size(image)}
    for entry in top.get("manifests") or []:
        platform = platform_of(entry.get("platform") or {})
        if not platform or platform.startswith("unknown"):
            continue  # attestation manifests
        sizes[platform] = manifest_size(_raw(f"{repository}@{entry['digest']}", client))
    return sizes


def _raw(reference: str, client: DockerClient) -> dict[str, Any]:
    argv = [*client.client_config.docker_cmd, "buildx", "imagetools", "inspect", "--raw"]
    text = _run_cli([*argv, reference], f"cannot inspect {reference} in its registry")
    data = json.loads(text)
    return data if isinstance(data, dict) else {}


def _run_cli(argv: Sequence[str], message: str) -> str:
    from pipeline.proc import run

    done = run(argv, error=EngineError, what=message)
    return done.stdout


def strip_reference(reference: str) -> str:
    """``host/repo:tag`` or ``host/repo@sha256:...`` -> ``host/repo``."""
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name


# --- the build ---


@dataclass
class BuildOutput:
    """What buildx printed and reported: its plain progress lines and its metadata file."""

    lines: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def build(
    context: Path,
    options: Mapping[str, Any],
    *,
    on_line: Callable[[str], None] | None = None,
    client: DockerClient | None = None,
) -> BuildOutput:
    """``docker buildx build`` with python-on-whales keyword ``options``; progress is read as
    plain text (for cached-step counts) and handed line by line to ``on_line``."""
    client = client or docker()
    output = BuildOutput()
    with tempfile.TemporaryDirectory(prefix="pipeline-build-") as tmp:
        metadata = Path(tmp) / "metadata.json"
        kwargs = {**options, "metadata_file": metadata, "progress": "plain", "stream_logs": True}
        try:
            stream = client.buildx.build(str(context), **kwargs)
            assert isinstance(stream, Iterator)
            for chunk in stream:
                for line in chunk.splitlines():
                    output.lines.append(line)
                    if on_line is not None:
                        on_line(line)
        except DockerException as exc:
            err = _stderr(exc) or "\n".join(output.lines[-20:])
            raise build_error(exc.docker_command, exc.return_code, err) from None
        if metadata.exists():
            output.metadata = json.loads(metadata.read_text(encoding="utf-8") or "{}")
    return output


def build_error(argv: Sequence[str], returncode: int | None, stderr: str) -> EngineError:
    """A failed build, with the fix when the cause is a known one."""
    text = stderr.lower()
    hint = ""
    message = "docker buildx build failed"
    if is_unreachable(stderr):
        return EngineError(
            "the Docker daemon is unreachable",
            argv=argv,
            returncode=returncode,
            hint=UNREACHABLE_HINT,
        )
    if "no match for platform in manifest" in text or "exec format error" in text:
        hint = "the base image or the builder lacks that platform: drop it from --platform"
    elif "multiple platforms feature is currently not supported" in text or (
        "docker exporter does not currently support exporting manifest lists" in text
    ):
        hint = "this builder cannot load several platforms: pass --push, or one --platform"
    elif "failed to read dockerfile" in text or "failed to solve: failed to read" in text:
        hint = "check --dockerfile / [tool.pipeline] dockerfile"
    elif "lock" in text and "needs to be updated" in text:
        hint = "run `uv lock` and commit uv.lock"
    return EngineError(message, argv=argv, returncode=returncode, stderr=stderr, hint=hint)


# --- local images ---


def image_exists(reference: str, client: DockerClient | None = None) -> bool:
    client = client or docker()
    try:
        return bool(client.image.exists(reference))
    except DockerException as exc:
        raise _fail(exc, f"cannot inspect {reference}") from None


def image_labels(reference: str, client: DockerClient | None = None) -> dict[str, str]:
    """The image config's labels (local store)."""
    client = client or docker()
    try:
        image = client.image.inspect(reference)
    except DockerException as exc:
        raise _fail(exc, f"no image {reference} in the local store", "run docker.build") from None
    return dict(image.config.labels or {})


def image_user(reference: str, client: DockerClient | None = None) -> str:
    client = client or docker()
    try:
        return str(client.image.inspect(reference).config.user or "")
    except DockerException as exc:
        raise _fail(exc, f"no image {reference} in the local store", "run docker.build") from None


def image_history(reference: str, client: DockerClient | None = None) -> list[str]:
    """Every ``created_by`` line of the image's history (``docker history --no-trunc``)."""
    client = client or docker()
    argv = [*client.client_config.docker_cmd, "history", "--no-trunc", "--format", "{{json .}}"]
    text = _run_cli([*argv, reference], f"cannot read the history of {reference}")
    return [line for line in text.splitlines() if line.strip()]


def save_stream(reference: str, client: DockerClient | None = None) -> Iterator[bytes]:
    """``docker save`` of ``reference`` (every platform the store holds) as a byte stream."""
    client = client or docker()
    try:
        stream = client.image.save(reference)
    except DockerException as exc:
        raise _fail(exc, f"cannot save {reference}") from None
    assert stream is not None
    yield from stream


class _StreamReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (for ``tarfile`` stream mode)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not len(self._buffer):
            try:
                self._buffer = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def saved_blobs(
    chunks: Iterable[bytes], *, keep: Callable[[str, int], bool]
) -> tuple[dict[str, bytes], dict[str, int]]:
    """Read a ``docker save`` tar stream: the content of members ``keep(name, size)`` selects,
    and the size of every member."""
    kept: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    reader = io.BufferedReader(_StreamReader(chunks), buffer_size=1 << 20)
    with tarfile.open(fileobj=reader, mode="r|") as archive:
        for member in archive:
            if not member.isfile():
                continue
            sizes[member.name] = member.size
            if keep(member.name, member.size):
                handle = archive.extractfile(member)
                if handle is not None:
                    kept[member.name] = handle.read()
    return kept, sizes


def local_sizes(
    reference: str, platforms: Sequence[str], client: DockerClient | None = None
) -> dict[str, int]:
    """Bytes per platform of an image in the local store. One platform: the image's size as
    the store reports it (compressed content in the containerd store), instantly; several:
    read from the manifests of its ``docker save`` OCI layout (seconds)."""
    client = client or docker()
    if len(platforms) == 1:
        try:
            return {platforms[0]: int(client.image.inspect(reference).size or 0)}
        except DockerException as exc:
            raise _fail(exc, f"cannot inspect {reference}") from None
    kept, _ = saved_blobs(save_stream(reference, client), keep=lambda name, size: size < 256 * 1024)
    return layout_sizes(kept)


def local_images(reference: str, client: DockerClient | None = None) -> dict[str, str]:
    """``{platform: manifest digest}`` of an image in the local (containerd) store, read from
    its ``docker save`` OCI layout: seconds for a multi-platform image, so only asked for when
    a registry tag already holds another index that may be the same image."""
    kept, _ = saved_blobs(
        save_stream(reference, client or docker()), keep=lambda name, size: size < 256 * 1024
    )
    images = layout_images(kept)
    if not images:
        raise EngineError(f"cannot read the image manifests of {reference} from the local store")
    return images


def cache_mount_ids(du_verbose: str, mount_id: str) -> list[str]:
    """Records of ``docker buildx du --verbose`` that are cache mounts whose id starts with
    ``mount_id`` (pure)."""
    ids: list[str] = []
    record = ""
    for line in du_verbose.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "ID":
            record = value.strip()
        elif key.strip() == "Description" and record:
            if value.strip().startswith("cached mount") and f'with id "/{mount_id}' in value:
                ids.append(record)
            record = ""
    return ids


def prune_cache_mounts(mount_id: str, client: DockerClient | None = None) -> int:
    """Delete the builder's cache mounts whose id starts with ``mount_id`` (and only those:
    other people's caches stay). Returns how many."""
    client = client or docker()
    base = [*client.client_config.docker_cmd, "buildx"]
    text = _run_cli([*base, "du", "--verbose"], "cannot list the build cache")
    ids = cache_mount_ids(text, mount_id)
    for record in ids:
        _run_cli([*base, "prune", "--force", "--filter", f"id={record}"], "cannot prune")
    return len(ids)


def remove_images(references: Iterable[str], client: DockerClient | None = None) -> None:
    """Remove local images (tags), ignoring those already gone."""
    client = client or docker()
    for reference in references:
        with contextlib.suppress(DockerException):
            client.image.remove(reference, force=True)


# --- containers and networks ---


@dataclass(frozen=True)
class Container:
    id: str
    name: str


def create_network(name: str, labels: Mapping[str, str], client: DockerClient | None = None) -> str:
    client = client or docker()
    try:
        return str(client.network.create(name, labels=dict(labels)).id)
    except DockerException as exc:
        raise _fail(exc, f"cannot create network {name}") from None


def run_container(
    image: str,
    command: Sequence[str] = (),
    *,
    name: str,
    labels: Mapping[str, str],
    network: str | None = None,
    aliases: Sequence[str] = (),
    entrypoint: str | None = None,
    read_only: bool = False,
    tmpfs: Sequence[str] = (),
    volumes: Sequence[tuple[str, str, str]] = (),
    publish: Sequence[tuple[str, int]] = (),
    platform: str | None = None,
    user: str | None = None,
    envs: Mapping[str, str] | None = None,
    pull: str = "missing",
    healthcheck: bool = True,
    client: DockerClient | None = None,
) -> Container:
    """Start a detached container (``pull``: missing, never or always)."""
    client = client or docker()
    kwargs: dict[str, Any] = {
        "detach": True,
        "name": name,
        "labels": dict(labels),
        "read_only": read_only,
        "tmpfs": list(tmpfs),
        "volumes": list(volumes),
        "publish": [(host, port) for host, port in publish],
        "pull": pull,
        "healthcheck": healthcheck,
        "envs": dict(envs or {}),
    }
    if network:
        kwargs["networks"] = [network]
        kwargs["network_aliases"] = list(aliases)
    if entrypoint is not None:
        kwargs["entrypoint"] = entrypoint
    if platform:
        kwargs["platform"] = platform
    if user:
        kwargs["user"] = user
    try:
        container = client.run(image, list(command), **kwargs)
    except DockerException as exc:
        raise _fail(exc, f"cannot start a container of {image}") from None
    return Container(id=str(getattr(container, "id", container)), name=name)


def run_once(
    image: str,
    command: Sequence[str],
    *,
    entrypoint: str | None = None,
    user: str | None = None,
    platform: str | None = None,
    labels: Mapping[str, str] | None = None,
    client: DockerClient | None = None,
) -> str:
    """Run a container to completion (``--rm``) and return its output."""
    client = client or docker()
    kwargs: dict[str, Any] = {"remove": True, "pull": "missing", "labels": dict(labels or {})}
    if entrypoint is not None:
        kwargs["entrypoint"] = entrypoint
    if user:
        kwargs["user"] = user
    if platform:
        kwargs["platform"] = platform
    try:
        return str(client.run(image, list(command), **kwargs))
    except DockerException as exc:
        raise _fail(exc, f"a container of {image} failed") from None


def container_state(container: str, client: DockerClient | None = None) -> dict[str, Any]:
    """``running``, ``status``, ``exit_code`` and ``health`` (None without a HEALTHCHECK)."""
    client = client or docker()
    try:
        state = client.container.inspect(container).state
    except DockerException as exc:
        raise _fail(exc, f"cannot inspect container {container}") from None
    health = state.health.status if state.health is not None else None
    return {
        "running": bool(state.running),
        "status": str(state.status or ""),
        "exit_code": state.exit_code,
        "health": str(health) if health is not None else None,
    }


def wait_healthy(container: str, timeout: float, client: DockerClient | None = None) -> float:
    """Seconds until the engine reports the container healthy; ``EngineError`` if it exits,
    turns unhealthy or ``timeout`` passes."""
    client = client or docker()
    start = time.monotonic()
    while True:
        state = container_state(container, client)
        if state["health"] == "healthy":
            return time.monotonic() - start
        if not state["running"]:
            raise EngineError(f"container exited with code {state['exit_code']} before healthy")
        if state["health"] == "unhealthy":
            raise EngineError("the engine reports the container unhealthy")
        if time.monotonic() - start > timeout:
            raise EngineError(f"not healthy after {timeout:g}s (health: {state['health']})")
        time.sleep(0.1)


def host_port(container: str, port: str, client: DockerClient | None = None) -> int:
    """The host port a container port (``8080/tcp``) is published on."""
    client = client or docker()
    try:
        ports = client.container.inspect(container).network_settings.ports or {}
    except DockerException as exc:
        raise _fail(exc, f"cannot inspect container {container}") from None
    for binding in ports.get(port) or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    raise EngineError(f"container {container} does not publish {port}")


def exec_in(
    container: str, command: Sequence[str], client: DockerClient | None = None
) -> tuple[int, str]:
    """Run ``command`` in a running container: (exit code, stdout+stderr)."""
    client = client or docker()
    try:
        out = client.container.execute(container, list(command))
    except DockerException as exc:
        return exc.return_code, _stderr(exc)
    return 0, str(out or "")


def logs(container: str, client: DockerClient | None = None) -> str:
    client = client or docker()
    try:
        return str(client.container.logs(container))
    except DockerException:
        return ""


def stop(container: str, timeout: int = 30, client: DockerClient | None = None) -> None:
    """``docker stop``: the image's STOPSIGNAL, then SIGKILL after ``timeout`` seconds."""
    client = client or docker()
    try:
        client.container.stop(container, time=timeout)
    except DockerException as exc:
        raise _fail(exc, f"cannot stop container {container}") from None


def remove_labelled(label: str, client: DockerClient | None = None) -> list[str]:
    """Remove every container, then every network, carrying ``label`` (key=value): what was
    removed. Never raises for something already gone."""
    client = client or docker()
    removed: list[str] = []
    try:
        containers = client.container.list(all=True, filters=[("label", label)])
    except DockerException:
        containers = []
    for container in containers:
        try:
            client.container.remove(container, force=True, volumes=True)
            removed.append(str(container.name))
        except DockerException:
            pass
    try:
        networks = client.network.list(filters=[("label", label)])
    except DockerException:
        networks = []
    for network in networks:
        try:
            client.network.remove(network)
            removed.append(str(network.name))
        except DockerException:
            pass
    return removed


# --- engine extensions (other engineers append functions below this line) ---


def local_digest(
    reference: str,
    docker_inspect: Callable[[str], str] | None = None,
    client: DockerClient | None = None,
) -> str:
    """The index digest of the local (containerd store) image: what the registry will store,
    so release tags are checked BEFORE anything is uploaded."""
    if docker_inspect is not None:
        return docker_inspect(reference)
    client = client or docker()
    try:
        value = str(client.image.inspect(reference).id or "")
    except DockerException as exc:
        raise RegistryError(
            f"image {reference} is not in the local store",
            argv=exc.docker_command,
            returncode=exc.return_code,
            stderr=_stderr(exc),
            hint="run `invoke docker.build` first",
        ) from None
    if not value.startswith("sha256:"):
        raise RegistryError(
            f"cannot tell the index digest of {reference} ({value or 'no Id'})",
            hint="use the containerd image store (Docker's containerd-snapshotter feature)",
        )
    return value
