"""A small client for the registry HTTP API v2 (OCI distribution): manifests, tags, blobs and
digests, with the Bearer/Basic auth flow; retries per ``pipeline.registry.retry``. Credentials
are passed in (``credentials_for`` at the edge); nothing here reads ``os.environ``. Plain HTTP
is used for loopback registries only."""

from __future__ import annotations

import base64
import http
import http.client
import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.errors import RegistryError
from pipeline.oci.manifest import MANIFEST_ACCEPT, Manifest
from pipeline.oci.reference import DOCKER_HUB, DOCKER_HUB_API, digest_of, is_digest, is_loopback
from pipeline.registry.auth import Credentials, credentials_for
from pipeline.registry.retry import (
    RetryPolicy,
    TransientRegistryError,
    call_with_retry,
    retry_policy,
    warn_stderr,
)
from pipeline.registry.transport import (
    OPENER,
    AuthError,
    NotFoundError,
    Response,
    json_object,
    next_link,
    response_error,
    status_error,
)

# --- the client ---


class RegistryClient:
    """One registry host. ``opener`` is injectable for tests; the real one is urllib's."""

    def __init__(
        self,
        host: str,
        *,
        credentials: Credentials | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        scheme: str | None = None,
        on_retry: Callable[[int, BaseException], None] | None = None,
    ) -> None:
        self.host = host
        self.api_host = DOCKER_HUB_API if host == DOCKER_HUB else host
        self.credentials = credentials
        self.retry = retry or RetryPolicy()
        self.timeout = min(timeout, self.retry.max_seconds)  # one wait never outlasts the budget
        self.scheme = scheme or ("http" if is_loopback(host) else "https")
        self.on_retry = on_retry
        self._tokens: dict[str, str] = {}

    # -- high level --

    def ping(self) -> None:
        """Reachable and the credentials are accepted (if any are needed)."""
        self._call("GET", "/v2/", what="ping the registry")

    def manifest(self, repository: str, ref: str) -> Manifest:
        """The manifest (index or image) for a tag or digest; ``NotFoundError`` if absent."""
        resp = self._call(
            "GET",
            f"/v2/{repository}/manifests/{ref}",
            headers={"Accept": MANIFEST_ACCEPT},
            scope=f"repository:{repository}:pull",
            what=f"read {self.host}/{repository}:{ref}",
        )
        digest = digest_of(resp.body)
        claimed = resp.header("Docker-Content-Digest")
        if is_digest(ref) and digest != ref:
            raise RegistryError(f"{self.host}/{repository}@{ref}: content has digest {digest}")
        if claimed and claimed != digest and not is_digest(ref):
            raise RegistryError(f"{self.host}/{repository}:{ref}: digest mismatch")
        data = resp.json(f"read {self.host}/{repository}:{ref}")
        media_type = resp.header("Content-Type").split(";")[0].strip() or data.get("mediaType", "")
        return Manifest(digest, media_type, resp.body)

    def digest(self, repository: str, ref: str) -> str | None:
        """The digest a tag points at, or None if the tag (or repository) does not exist."""
        try:
            resp = self._call(
                "HEAD",
                f"/v2/{repository}/manifests/{ref}",
                headers={"Accept": MANIFEST_ACCEPT},
                scope=f"repository:{repository}:pull",
                what=f"read {self.host}/{repository}:{ref}",
            )
        except NotFoundError:
            return None
        claimed = resp.header("Docker-Content-Digest")
        if is_digest(claimed):
            return claimed
        return self.manifest(repository, ref).digest

    def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        """Write the exact bytes under ``tag``: the same digest, guaranteed."""
        resp = self._call(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            headers={"Content-Type": manifest.media_type},
            body=manifest.body,
            scope=f"repository:{repository}:pull,push",
            what=f"write {self.host}/{repository}:{tag}",
        )
        written = resp.header("Docker-Content-Digest") or manifest.digest
        if written != manifest.digest:
            raise RegistryError(
                f"{self.host}/{repository}:{tag}: registry stored {written}, "
                f"expected {manifest.digest}"
            )
        return written

    def delete_manifest(self, repository: str, digest: str) -> None:
        """DELETE by digest (removes every tag pointing at it)."""
        if not is_digest(digest):
            raise RegistryError(f"refusing to delete {digest!r}: not a digest")
        self._call(
            "DELETE",
            f"/v2/{repository}/manifests/{digest}",
            scope=f"repository:{repository}:delete",
            what=f"delete {self.host}/{repository}@{digest}",
        )

    def delete_tag(self, repository: str, tag: str) -> None:
        """DELETE a tag (OCI distribution 1.1); ``registry:2`` refuses: a ``RegistryError``."""
        path, what = f"/v2/{repository}/manifests/{tag}", f"delete {self.host}/{repository}:{tag}"
        self._call("DELETE", path, scope=f"repository:{repository}:delete", what=what)

    def tags(self, repository: str) -> list[str]:
        """Every tag of the repository (pages followed); [] if the repository does not exist."""
        result: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list?n=1000"
        while path:
            try:
                resp = self._call(
                    "GET",
                    path,
                    scope=f"repository:{repository}:pull",
                    what=f"list the tags of {self.host}/{repository}",
                )
            except NotFoundError:
                return result
            data = resp.json(f"list the tags of {self.host}/{repository}")
            result.extend(data.get("tags") or [])
            path = next_link(resp.header("Link"))
        return result

    def blob(self, repository: str, digest: str) -> bytes:
        resp = self._call(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            scope=f"repository:{repository}:pull",
            what=f"read blob {digest[:19]} of {self.host}/{repository}",
        )
        if digest_of(resp.body) != digest:
            raise RegistryError(f"blob {digest} of {self.host}/{repository}: corrupt content")
        return resp.body

    def upload_blob(self, repository: str, digest: str, data: bytes) -> bool:
        """Monolithic blob upload (POST then PUT ?digest=); False if the repository has it. A
        PUT whose upload the registry no longer knows (it took the blob, then a reset cut its
        answer off, and the retry found the session closed) looks again, then starts over once."""
        scope = f"repository:{repository}:pull,push"
        if self._has_blob(repository, digest, scope):
            return False
        for again in (False, True):
            started = self._call(
                "POST",
                f"/v2/{repository}/blobs/uploads/",
                body=b"",
                scope=scope,
                what=f"start the upload of {digest[:19]} to {self.host}/{repository}",
            )
            location = urllib.parse.urlsplit(started.header("Location"))
            if not location.path:
                raise RegistryError(f"{self.host}/{repository}: the upload has no Location")
            query = urllib.parse.urlencode({"digest": digest})
            try:
                self._call(
                    "PUT",
                    f"{location.path}?{location.query + '&' if location.query else ''}{query}",
                    headers={"Content-Type": "application/octet-stream"},
                    body=data,
                    scope=scope,
                    what=f"upload {digest[:19]} to {self.host}/{repository}",
                )
                return True
            except NotFoundError:
                if self._has_blob(repository, digest, scope):
                    return True
                if again:
                    raise
        return True  # not reached: the second pass returns or raises

    def _has_blob(self, repository: str, digest: str, scope: str) -> bool:
        try:
            self._call("HEAD", f"/v2/{repository}/blobs/{digest}", scope=scope, what="check")
        except NotFoundError:
            return False
        return True

    def image_config(self, repository: str, ref: str, platform: str = "") -> dict[str, Any]:
        """The image config JSON (labels, created...) of a tag or digest; for an index, of the
        given platform, else linux/amd64, else the first platform."""
        manifest = self.manifest(repository, ref)
        if manifest.is_index:
            entries = [
                e
                for e in manifest.json().get("manifests", [])
                if (e.get("platform") or {}).get("os") not in (None, "unknown")
            ]
            if not entries:
                raise RegistryError(f"{self.host}/{repository}:{ref}: an index with no images")

            def key(entry: dict[str, Any]) -> int:
                p = entry.get("platform") or {}
                text = f"{p.get('os')}/{p.get('architecture')}"
                return 0 if text == platform else 1 if text == "linux/amd64" else 2

            manifest = self.manifest(repository, str(min(entries, key=key)["digest"]))
        config = manifest.json().get("config") or {}
        if not config.get("digest"):
            raise RegistryError(f"{self.host}/{repository}:{ref}: manifest has no config")
        return json_object(self.blob(repository, str(config["digest"])), f"config of {ref}")

    # -- plumbing --

    def _call(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        scope: str = "",
        what: str = "",
    ) -> Response:
        return call_with_retry(
            lambda: self._once(method, path, headers or {}, body, scope, what),
            self.retry,
            on_retry=self.on_retry,
        )

    def _once(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | None,
        scope: str,
        what: str,
    ) -> Response:
        resp = self._send(method, path, headers, body, self._auth_header(scope), what)
        if resp.status == 401:
            challenge = resp.header("WWW-Authenticate")
            auth = self._answer(challenge, scope, what)
            if auth is not None:
                resp = self._send(method, path, headers, body, auth, what)
        if resp.status < 300 or (method == "GET" and resp.status in (301, 302, 307)):
            return resp
        raise self._error(resp, what)

    def _auth_header(self, scope: str) -> str | None:
        token = self._tokens.get(scope)
        if token:
            return f"Bearer {token}"
        if self.credentials and "basic" in self._tokens:
            return self._basic()
        return None

    def _basic(self) -> str:
        assert self.credentials is not None
        pair = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def _answer(self, challenge: str, scope: str, what: str) -> str | None:
        """The Authorization header that answers a 401 challenge, or None if we cannot."""
        kind, _, params_text = challenge.partition(" ")
        if kind.lower() == "basic":
            if self.credentials is None:
                return None
            self._tokens["basic"] = "yes"
            return self._basic()
        if kind.lower() != "bearer":
            return None
        params = dict(re.findall(r'(\w+)="([^"]*)"', params_text))
        realm = params.get("realm", "")
        if not realm:
            return None
        query = {"service": params.get("service", "")}
        wanted = params.get("scope") or scope
        if wanted:
            query["scope"] = wanted
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, method="GET")
        if self.credentials is not None:
            request.add_header("Authorization", self._basic())
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as fh:
                data = json.loads(fh.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise AuthError(
                    f"{what or self.host}: the registry refused the credentials (HTTP {exc.code})",
                    hint="check REGISTRY_USERNAME/REGISTRY_PASSWORD (or GITHUB_TOKEN for ghcr.io)",
                ) from None
            raise status_error(exc.code, f"{what}: token endpoint") from None
        except (OSError, ValueError) as exc:
            raise TransientRegistryError(f"{what}: token endpoint failed ({exc})") from exc
        token = str(data.get("token") or data.get("access_token") or "")
        if not token:
            return None
        self._tokens[scope] = token
        return f"Bearer {token}"

    def _send(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | None,
        auth: str | None,
        what: str,
    ) -> Response:
        url = f"{self.scheme}://{self.api_host}{path}"
        request = urllib.request.Request(url, data=body, method=method)
        for key, value in headers.items():
            request.add_header(key, value)
        if auth:
            request.add_header("Authorization", auth)
        try:
            with OPENER.open(request, timeout=self.timeout) as fh:
                return Response(fh.status, dict(fh.headers.items()), fh.read())
        except urllib.error.HTTPError as exc:
            try:
                content = exc.read()
            except (OSError, http.client.HTTPException):
                content = b""
            return Response(exc.code, dict(exc.headers.items()) if exc.headers else {}, content)
        except TimeoutError as exc:
            raise TransientRegistryError(
                f"{what or self.host}: timed out after {self.timeout:g}s"
            ) from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ConnectionRefusedError):
                raise TransientRegistryError(
                    f"{what or self.host}: connection refused: is the registry at {self.host} up?"
                ) from exc
            if isinstance(reason, socket.gaierror):
                raise RegistryError(
                    f"{what or self.host}: unknown host {self.api_host}",
                    hint="check the image name",
                ) from exc
            raise TransientRegistryError(f"{what or self.host}: {reason}") from exc
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            text = str(exc) or type(exc).__name__
            raise TransientRegistryError(f"{what or self.host}: {text}") from exc

    def _error(self, resp: Response, what: str) -> RegistryError:
        return response_error(resp, what or self.host)


# --- constructors for the edge (values from settings and the environment, passed in) ---


def client_for(
    host: str,
    *,
    extra: Mapping[str, Any],
    environ: Mapping[str, str],
    warn: Callable[[str], None] = warn_stderr,
    timeout: float = 30.0,
) -> RegistryClient:
    """A client for ``host``: credentials from ``environ``, retries from settings and
    ``environ``, ``timeout`` per connect or read; each retry is reported through ``warn``."""
    return RegistryClient(
        host,
        timeout=timeout,
        credentials=credentials_for(host, environ),
        retry=retry_policy(extra, environ),
        on_retry=lambda n, exc: warn(f"retrying (attempt {n + 1}): {exc}"),
    )
