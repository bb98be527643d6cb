"""Image references: ``host/repository[:tag][@digest]``, the one parser in the tree (on the name
grammar of ``pipeline.oci.name``), and the digest and loopback rules that go with it (pure)."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from pipeline.errors import RegistryError, UsageError
from pipeline.oci.name import is_host, is_repository

DOCKER_HUB = "docker.io"

DOCKER_HUB_API = "registry-1.docker.io"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Reference:
    """``host/repository[:tag][@digest]``, with Docker Hub's defaults applied."""

    host: str
    repository: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """``host/repository``, as docker knows it."""
        return f"{self.host}/{self.repository}"

    @property
    def ref(self) -> str:
        """What the manifest endpoint takes: the digest if any, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def pinned(self) -> str:
        """``host/repository@digest``: what a deployment runs."""
        if not self.digest:
            raise UsageError(f"{self.name}: no digest to pin")
        return f"{self.name}@{self.digest}"

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.host, self.repository, "", digest)

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.host, self.repository, tag, "")


def parse_reference(text: str) -> Reference:
    """``ghcr.io/acme/app:v1``, ``127.0.0.1:5000/x@sha256:...``, ``python:3.11-slim``..."""
    text = text.strip()
    if not text or any(c.isspace() for c in text):
        raise RegistryError(f"{text!r} is not an image reference", hint="use HOST/NAME[:TAG]")
    rest, _, digest = text.partition("@")
    if digest and not is_digest(digest):
        raise RegistryError(f"{text!r}: {digest!r} is not a sha256 digest")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, path = first, remainder
    else:
        host, path = DOCKER_HUB, rest
    name, colon, tag = path.rpartition(":")
    if not colon or "/" in tag:
        name, tag = path, ""
    elif not tag:
        raise RegistryError(f"{text!r}: empty tag")
    if not name or name.startswith("/") or name.endswith("/") or "//" in name:
        raise RegistryError(f"{text!r}: no repository name", hint="use HOST/NAME[:TAG]")
    if host == DOCKER_HUB and "/" not in name:
        name = f"library/{name}"
    if host != DOCKER_HUB and not is_host(host.lower()):
        raise RegistryError(f"{text!r}: {host!r} is not a registry host")
    if not is_repository(name):
        raise RegistryError(
            f"{text!r}: {name!r} is not a repository name (lowercase letters, digits, and "
            ". _ __ - between them)"
        )
    if tag and not _TAG.match(tag):
        raise RegistryError(f"{text!r}: {tag!r} is not a valid tag")
    return Reference(host, name, tag, digest)


def is_digest(text: str) -> bool:
    return bool(_DIGEST.match(text))


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: plain HTTP, as Docker does."""
    if host.startswith("["):
        hostname = host[1:].partition("]")[0]
    else:
        hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
