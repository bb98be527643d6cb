"""The OCI distribution grammar for names, the one place it is written: a registry host and a
lowercase repository path (``[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*`` per component). The reference
parser (``pipeline.oci.reference``: tags, digests, Docker Hub's defaults) checks names with it.

``parse_image_name`` checks an image name as flags and settings give it
(``ghcr.io/acme/api-gateway``) before anything runs: no whitespace, no scheme, no tag or digest
(tags come from the ref), a registry host. Uppercase is folded to lowercase first, as
``docker.tags`` always did (``ghcr.io/MyOrg/App``)."""

from __future__ import annotations

import re

from pipeline.errors import UsageError

# Pattern strings: ``re`` compiles (and caches) them on first use.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_HOST = (
    r"(?:localhost|\[[0-9a-f:]+\]|[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
    r"(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)(?::[0-9]{1,5})?"
)
MAX_NAME = 255


def is_repository(path: str) -> bool:
    """``acme/api-gateway``: lowercase components joined by ``/``."""
    return re.fullmatch(_PATH, path) is not None


def is_host(host: str) -> bool:
    """``ghcr.io``, ``127.0.0.1:5000``, ``[::1]:5000``, ``localhost``: lowercase."""
    return re.fullmatch(_HOST, host) is not None


def parse_image_name(text: str, *, what: str, error: type[UsageError] = UsageError) -> str:
    """``text`` as an image name (lowercased), or ``error`` naming ``what`` (``--image``,
    ``[tool.pipeline] image``) and the rule it breaks."""
    hint = "use HOST/NAMESPACE/NAME, e.g. ghcr.io/acme/api-gateway"
    raw = text.strip()
    if not raw:
        raise error(f"{what} is empty", hint=hint)
    if any(c.isspace() for c in raw):
        raise error(f"{what} {text!r}: an image name has no spaces", hint=hint)
    if "://" in raw:
        raise error(f"{what} {text!r}: an image name has no scheme", hint=hint)
    name = raw.lower()
    if "@" in name:
        raise error(f"{what} {text!r}: a digest does not belong in the image name", hint=hint)
    host, slash, path = name.partition("/")
    if not slash:
        raise error(f"{what} {text!r}: no registry host", hint=hint)
    if ":" in path:
        raise error(
            f"{what} {text!r}: a tag does not belong in the image name (tags come from --ref)",
            hint=hint,
        )
    if not is_host(host):
        raise error(f"{what} {text!r}: {host!r} is not a registry host", hint=hint)
    if not is_repository(path):
        raise error(
            f"{what} {text!r}: {path!r} is not a repository name (lowercase letters, digits, "
            "and . _ __ - between them, / between components)",
            hint=hint,
        )
    if len(name) > MAX_NAME:
        raise error(f"{what} {text!r}: longer than {MAX_NAME} characters", hint=hint)
    return name
