"""Credentials out of everything the pipeline shows or stores: a URL that reaches an image
label, a build record, a log line or a command's argv loses its ``user:password@``, its query
and its fragment; free text loses ``password=``/``token=`` values and ``user:pass@`` in URLs."""

from __future__ import annotations

import re
import urllib.parse

# Pattern strings: ``re`` compiles (and caches) them on the first ``redact``, so a run that only
# needs ``public_url`` (every `invoke docker.tags`) never pays for them.
_URL_CREDENTIALS = r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@"
_ASSIGNED = r"(?i)\b(password|passwd|token|secret|api[_-]?key)=\S+"
_GITHUB_TOKEN = r"\b(gh[pousr]_[A-Za-z0-9]{10,}|github_pat_[A-Za-z0-9_]{20,})\b"


def public_url(url: str) -> str:
    """A repository URL as it may be shown: ``https://ci-bot:ghp_X@github.com/acme/app.git``
    is ``https://github.com/acme/app``; ``git@github.com:acme/app.git`` is
    ``https://github.com/acme/app``; anything that is not a URL comes back empty."""
    url = url.strip()
    if not url:
        return ""
    if url.startswith("git@") and ":" in url:
        host, _, path = url[4:].partition(":")
        url = f"https://{host}/{path}"
    elif url.startswith("ssh://"):
        url = "https://" + url.removeprefix("ssh://")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    if parts.scheme == "https" and parts.port == 443:
        host = parts.hostname
    path = parts.path.removesuffix("/").removesuffix(".git")
    return urllib.parse.urlunsplit((parts.scheme, host, path, "", ""))


def redact(text: str) -> str:
    """Free text (stderr, a log line, an argv element) with credentials masked."""
    text = re.sub(_URL_CREDENTIALS, r"\g<scheme>***@", text)
    text = re.sub(_ASSIGNED, r"\1=***", text)
    return re.sub(_GITHUB_TOKEN, "***", text)
