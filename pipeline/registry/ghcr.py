"""ghcr.io's deletion path: the GitHub Packages REST API.

ghcr.io answers ``DELETE /v2/<name>/manifests/<digest>`` with 405 UNSUPPORTED; an image is
deleted as a package VERSION (``name`` is the manifest digest) of the package ``<name>`` minus
its owner, through ``https://api.github.com`` with ``Authorization: Bearer GITHUB_TOKEN``:

- ``GET /{orgs|users}/{owner}/packages/container/{package}/versions?per_page=100&page=N``
  (pages followed through the ``Link`` header);
- ``DELETE /{orgs|users}/{owner}/packages/container/{package}/versions/{id}`` -> 204.

The package name is URL-encoded (``a/b`` -> ``a%2Fb``). Whether the owner is an organisation
or a user is found out (organisation first; GitHub answers 404 on the wrong one).

Which path a registry takes is a capability (``registry_api``): ``ghcr`` for ghcr.io by default,
``registry`` (the registry API's DELETE) for any other host; the setting names it for a host that
behaves as ghcr.io (the tests' model). Nothing here reads ``os.environ``: the token and the API
base come in from the edge.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError, RegistryError, UsageError
from pipeline.registry.client import RegistryClient
from pipeline.registry.retry import (
    TRANSIENT_STATUS,
    RetryPolicy,
    TransientRegistryError,
    call_with_retry,
)
from pipeline.registry.transport import AuthError, NotFoundError

GITHUB_API = "https://api.github.com"
GHCR = "ghcr.io"
REGISTRY_APIS = ("ghcr", "registry")
OWNER_KINDS = ("orgs", "users")

# --- pure ---


def registry_api(host: str, setting: str = "") -> str:
    """The deletion path for ``host``: ``ghcr`` (Packages API) or ``registry`` (``DELETE
    /v2/...``). ``setting`` (``[tool.pipeline] registry_api``) empty or ``auto``: ghcr.io is
    ``ghcr``, every other host ``registry``."""
    value = str(setting or "").strip().lower()
    if value in ("", "auto"):
        return "ghcr" if host == GHCR else "registry"
    if value not in REGISTRY_APIS:
        raise ConfigError(
            f"[tool.pipeline] registry_api: {setting!r} is not one of auto, ghcr, registry"
        )
    return value


def api_base(extra: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    """The GitHub REST API base: ``GITHUB_API_URL`` (set by Actions, GHES included), else
    ``[tool.pipeline] github_api_url``, else https://api.github.com."""
    value = environ.get("GITHUB_API_URL") or str(extra.get("github_api_url") or "") or GITHUB_API
    if not re.match(r"^https?://[^/\s]+", value):
        raise ConfigError(f"GitHub API URL {value!r}: expected http(s)://HOST[/PATH]")
    return value.rstrip("/")


def split_package(repository: str) -> tuple[str, str]:
    """``acme/api-gateway`` -> (``acme``, ``api-gateway``); ``acme/a/b`` -> (``acme``, ``a/b``)."""
    owner, _, package = repository.partition("/")
    if not owner or not package:
        raise UsageError(
            f"{repository!r}: a ghcr.io image is OWNER/PACKAGE",
            hint="e.g. ghcr.io/acme/api-gateway",
        )
    return owner, package


def versions_path(kind: str, owner: str, package: str, version: int | None = None) -> str:
    """The REST path of a package's versions (or of one version), the package name encoded."""
    quoted_owner = urllib.parse.quote(owner, safe="")
    path = f"/{kind}/{quoted_owner}/packages/container/{urllib.parse.quote(package, safe='')}"
    return f"{path}/versions" + (f"/{version}" if version is not None else "")


@dataclass(frozen=True)
class Version:
    """One package version: ``name`` is the manifest digest, ``tags`` its tags."""

    id: int
    name: str
    tags: tuple[str, ...] = ()


def parse_versions(data: Any) -> list[Version]:
    """A page of ``GET .../versions``; anything but a list of versions is a RegistryError."""
    if not isinstance(data, list):
        raise RegistryError("the Packages API returned no list of versions")
    result = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("id"), int):
            raise RegistryError("the Packages API returned a version without an id")
        container = (item.get("metadata") or {}).get("container") or {}
        result.append(
            Version(item["id"], str(item.get("name", "")), tuple(container.get("tags") or ()))
        )
    return result


def next_link(header: str) -> str | None:
    """The URL of ``rel="next"`` in a GitHub ``Link`` header, or None on the last page."""
    for part in header.split(","):
        match = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', part)
        if match:
            return match.group(1)
    return None


def github_message(body: bytes) -> str:
    """``{"message": ..., "documentation_url": ...}`` -> the message."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("message", "")) if isinstance(data, dict) else ""


# --- the client ---

Sender = Callable[[str, str, Mapping[str, str]], tuple[int, Mapping[str, str], bytes]]


def urllib_sender(timeout: float) -> Sender:
    def send(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, Any, bytes]:
        request = urllib.request.Request(url, method=method, headers=dict(headers))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as fh:
                return fh.status, dict(fh.headers.items()), fh.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()) if exc.headers else {}, exc.read()
        except (TimeoutError, ConnectionError) as exc:
            raise TransientRegistryError(f"{method} {url}: {exc}") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, socket.gaierror):
                raise RegistryError(f"{method} {url}: unknown host") from exc
            raise TransientRegistryError(f"{method} {url}: {exc.reason}") from exc

    return send


@dataclass
class PackagesClient:
    """The versions of one container package through the GitHub REST API."""

    api: str
    token: str = field(repr=False)
    owner: str
    package: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    send: Sender = field(default_factory=lambda: urllib_sender(30.0))
    kind: str = ""  # orgs or users; found out on first use when empty
    per_page: int = 100  # GitHub's maximum

    def versions(self) -> list[Version]:
        """Every version of the package (pages followed)."""
        if self.kind:
            return self._list(self.kind)
        for kind in OWNER_KINDS:
            try:
                found = self._list(kind)
            except NotFoundError:
                continue
            self.kind = kind
            return found
        raise NotFoundError(
            f"package {self.package} of {self.owner} not found in the GitHub Packages API "
            f"({self.api})",
            hint="check the image name, and that GITHUB_TOKEN may read packages (`packages: read`)",
        )

    def delete(self, version: int) -> None:
        if not self.kind:
            self.versions()
        path = versions_path(self.kind, self.owner, self.package, version)
        self._call("DELETE", self.api + path, f"delete version {version} of {self.package}")

    def _list(self, kind: str) -> list[Version]:
        path = versions_path(kind, self.owner, self.package)
        url: str | None = f"{self.api}{path}?per_page={self.per_page}"
        found: list[Version] = []
        while url:
            _, headers, body = self._call("GET", url, f"list the versions of {self.package}")
            found += parse_versions(json.loads(body or b"[]"))
            link = next((v for k, v in headers.items() if k.lower() == "link"), "")
            url = next_link(link)
        return found

    def _call(self, method: str, url: str, what: str) -> tuple[int, Mapping[str, str], bytes]:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

        def once() -> tuple[int, Mapping[str, str], bytes]:
            status, answer, body = self.send(method, url, headers)
            if status < 300:
                return status, answer, body
            message = github_message(body)
            detail = f"HTTP {status}" + (f": {message}" if message else "")
            if status in (401, 403):
                raise AuthError(
                    f"{what}: the GitHub API refused ({detail})",
                    hint="GITHUB_TOKEN needs `packages: write` (delete) on this package",
                )
            if status == 404:
                raise NotFoundError(f"{what}: not found ({detail})")
            kind = TransientRegistryError if status in TRANSIENT_STATUS else RegistryError
            raise kind(f"{what}: the GitHub API answered {detail}")

        return call_with_retry(once, self.retry)


# --- the deletion path for docker.prune ---


def packages_deleter(packages: PackagesClient) -> Callable[[str], None]:
    """Delete a manifest digest as the package version named by it (versions listed once)."""
    by_name: dict[str, int] = {}

    def delete(digest: str) -> None:
        if not by_name:
            by_name.update({v.name: v.id for v in packages.versions()})
        if digest not in by_name:
            raise NotFoundError(
                f"{digest} is no version of package {packages.package}: not deleted",
                hint="run the prune again",
            )
        packages.delete(by_name[digest])

    return delete


@dataclass(frozen=True)
class Deletion:
    """How ``docker.prune`` deletes on one registry: ``api`` (``ghcr`` or ``registry``), a line
    saying so, and ``delete(digest)``."""

    api: str
    describe: str
    delete: Callable[[str], None]


def deleter_for(
    client: RegistryClient,
    repository: str,
    *,
    extra: Mapping[str, Any],
    environ: Mapping[str, str],
    deleting: bool = True,
) -> Deletion:
    """The deletion path for ``client.host`` (``[tool.pipeline] registry_api``, else by host).
    The Packages API needs ``GITHUB_TOKEN`` (else ``REGISTRY_PASSWORD``, a GitHub token on
    ghcr.io): a usage error (exit 2) up front when ``deleting``."""
    api = registry_api(client.host, str(extra.get("registry_api") or ""))
    if api == "registry":
        return Deletion(
            api,
            f"deleting through the registry API ({client.host}/{repository})",
            lambda digest: client.delete_manifest(repository, digest),
        )
    owner, package = split_package(repository)
    line = f"deleting through the GitHub Packages API (package {package} on {client.host})"
    # On ghcr.io the registry password is a GitHub token too (GITHUB_TOKEN or a PAT).
    token = environ.get("GITHUB_TOKEN", "") or environ.get("REGISTRY_PASSWORD", "")
    if not token:
        missing = UsageError(
            f"{client.host} deletes through the GitHub Packages API: GITHUB_TOKEN is not set",
            hint="set GITHUB_TOKEN or REGISTRY_PASSWORD (in Actions: `permissions: packages: "
            "write`)",
        )
        if deleting:
            raise missing

        def refuse(digest: str) -> None:
            raise missing

        return Deletion(api, line, refuse)
    packages = PackagesClient(api_base(extra, environ), token, owner, package, retry=client.retry)
    return Deletion(api, line, packages_deleter(packages))
