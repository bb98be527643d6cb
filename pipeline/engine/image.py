"""Images in the local store: existence, labels, user, history, ``docker save`` layouts, the
index digest, removal."""

from __future__ import annotations

import contextlib
import io
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from python_on_whales import DockerClient, DockerException

from pipeline.engine.cli import docker, fail, is_unreachable, run_cli, stderr_of
from pipeline.errors import EngineError, RegistryError
from pipeline.oci.manifest import (
    layout_images,
    layout_sizes,
)


def image_exists(reference: str, client: DockerClient | None = None) -> bool:
    client = client or docker()
    try:
        return bool(client.image.exists(reference))
    except DockerException as exc:
        raise fail(exc, f"cannot inspect {reference}") from None


def image_labels(reference: str, client: DockerClient | None = None) -> dict[str, str]:
    """The image config's labels (local store)."""
    client = client or docker()
    try:
        image = client.image.inspect(reference)
    except DockerException as exc:
        raise fail(exc, f"no image {reference} in the local store", "run docker.build") from None
    return dict(image.config.labels or {})


def image_user(reference: str, client: DockerClient | None = None) -> str:
    client = client or docker()
    try:
        return str(client.image.inspect(reference).config.user or "")
    except DockerException as exc:
        raise fail(exc, f"no image {reference} in the local store", "run docker.build") from None


def image_history(reference: str, client: DockerClient | None = None) -> list[str]:
    """Every ``created_by`` line of the image's history (``docker history --no-trunc``)."""
    client = client or docker()
    argv = [*client.client_config.docker_cmd, "history", "--no-trunc", "--format", "{{json .}}"]
    text = run_cli([*argv, reference], f"cannot read the history of {reference}")
    return [line for line in text.splitlines() if line.strip()]


def save_stream(reference: str, client: DockerClient | None = None) -> Iterator[bytes]:
    """``docker save`` of ``reference`` (every platform the store holds) as a byte stream."""
    client = client or docker()
    try:
        stream = client.image.save(reference)
    except DockerException as exc:
        raise fail(exc, f"cannot save {reference}") from None
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
            raise fail(exc, f"cannot inspect {reference}") from None
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
        if is_unreachable(stderr_of(exc)):
            raise fail(exc, "") from None
        raise RegistryError(
            f"image {reference} is not in the local store", hint="run `invoke docker.build` first"
        ) from None
    if not value.startswith("sha256:"):
        raise RegistryError(
            f"cannot tell the index digest of {reference} ({value or 'no Id'})",
            hint="use the containerd image store (Docker's containerd-snapshotter feature)",
        )
    return value


def remove_images(references: Iterable[str], client: DockerClient | None = None) -> None:
    """Remove local images (tags), ignoring those already gone."""
    client = client or docker()
    for reference in references:
        with contextlib.suppress(DockerException):
            client.image.remove(reference, force=True)
