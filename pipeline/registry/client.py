"""A small client for the registry HTTP API v2 (OCI distribution): manifests, tags, blobs and
digests, with the Bearer/Basic auth flow and retries.

Transient faults (connection reset, timeout, 429, 5xx) are retried with exponential backoff and
jitter (tenacity) within a budget of attempts and seconds; 401, 403 and 404 are not retried.
Credentials are passed in (``credentials_for(host, environ)`` at the edge); nothing here reads
``os.environ``. Plain HTTP is used for loopback registries only.
"""

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
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from pipeline.errors import RegistryError
from pipeline.oci.manifest import MANIFEST_ACCEPT, Manifest
from pipeline.oci.reference import DOCKER_HUB, DOCKER_HUB_API, digest_of, is_digest, is_loopback

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class TransientRegistryError(RegistryError):
    """A fault worth retrying: connection reset or refused mid-way, timeout, 429, 5xx."""


class NotFoundError(RegistryError):
    """404: the repository, manifest or blob does not exist."""


class AuthError(RegistryError):
    """401 or 403: wrong or missing credentials, or no permission."""


# --- references ---


_TRANSIENT = re.compile(
    r"connection reset|broken pipe|\bEOF\b|timeout|timed out|i/o timeout|429|too many requests"
    r"|\b50[0-9]\b|service unavailable|bad gateway|internal server error|connection refused"
    r"|TLS handshake|no such host.*temporary|server misbehaving",
    re.IGNORECASE,
)
_PERMANENT = re.compile(
    r"unauthorized|denied|forbidden|\b401\b|\b403\b|\b404\b|not found|manifest unknown"
    r"|name unknown|no such image|does not exist|invalid reference",
    re.IGNORECASE,
)


def is_transient(stderr: str) -> bool:
    """Whether a failed ``docker push``/``docker login`` is worth retrying."""
    if _PERMANENT.search(stderr):
        return False
    return bool(_TRANSIENT.search(stderr))


# --- credentials and retry policy ---


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


def credentials_for(host: str, environ: Mapping[str, str]) -> Credentials | None:
    """``REGISTRY_USERNAME``/``REGISTRY_PASSWORD``; for ghcr.io also ``GITHUB_ACTOR``/
    ``GITHUB_TOKEN``. None when the registry needs no login."""
    user = environ.get("REGISTRY_USERNAME", "")
    password = environ.get("REGISTRY_PASSWORD", "")
    if user and password:
        return Credentials(user, password)
    if host == "ghcr.io" and environ.get("GITHUB_TOKEN"):
        return Credentials(environ.get("GITHUB_ACTOR") or "github-actions", environ["GITHUB_TOKEN"])
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by attempts AND seconds."""

    attempts: int = 5
    max_seconds: float = 60.0
    initial: float = 0.5
    max_wait: float = 8.0
    jitter: float = 0.5

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RetryPolicy:
        """From ``[tool.pipeline.retry]``-like settings; unknown keys are an error."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise RegistryError(f"retry settings: unknown key {sorted(unknown)[0]!r}")
        try:
            values = {k: float(v) for k, v in data.items()}
        except (TypeError, ValueError):
            raise RegistryError("retry settings: values must be numbers") from None
        policy = cls(**{k: (int(v) if k == "attempts" else v) for k, v in values.items()})  # type: ignore[arg-type]
        if policy.attempts < 1 or policy.max_seconds <= 0:
            raise RegistryError("retry settings: attempts >= 1 and max_seconds > 0")
        return policy


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    retry_on: tuple[type[BaseException], ...] = (TransientRegistryError,),
    on_retry: Callable[[int, BaseException], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """``fn()`` retried on ``retry_on`` exceptions per ``policy``; the last error is re-raised."""

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(state.attempt_number, exc)

    kwargs: dict[str, Any] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.max_seconds),
        wait=wait_exponential_jitter(
            multiplier=policy.initial, max=policy.max_wait, jitter=policy.jitter
        ),
        retry=retry_if_exception_type(retry_on),
        before_sleep=before_sleep,
        reraise=True,
        **kwargs,
    )
    try:
        return retrying(fn)
    except TransientRegistryError as exc:
        attempts = retrying.statistics.get("attempt_number", 1)
        if attempts > 1:
            exc.message = f"{exc.message} (gave up after {attempts} attempts)"
        raise


# --- the client ---


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow blob redirects (object storage, CDNs) without sending our registry credentials
    to another host."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            old_host = urllib.parse.urlsplit(req.full_url).netloc
            if urllib.parse.urlsplit(newurl).netloc != old_host:
                new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_RedirectHandler())


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return ""


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
        self.timeout = timeout
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
        media_type = resp.header("Content-Type").split(";")[0].strip()
        media_type = media_type or str(json.loads(resp.body).get("mediaType", ""))
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
        """DELETE one tag (OCI distribution 1.1); a registry that only deletes by digest
        (``registry:2``) refuses, which is a ``RegistryError`` saying so."""
        if is_digest(tag):
            raise RegistryError(f"refusing to delete {tag!r} as a tag: it is a digest")
        try:
            self._call(
                "DELETE",
                f"/v2/{repository}/manifests/{tag}",
                scope=f"repository:{repository}:delete",
                what=f"delete the tag {self.host}/{repository}:{tag}",
            )
        except TransientRegistryError:
            raise
        except RegistryError as exc:
            if isinstance(exc, AuthError):
                raise
            raise RegistryError(
                f"{self.host} cannot delete the tag {tag} (no DELETE of tags on this registry)"
            ) from exc

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
            data = json.loads(resp.body or b"{}")
            result.extend(data.get("tags") or [])
            path = _next_link(resp.header("Link"))
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
        """Monolithic blob upload (POST then PUT ?digest=); False if the repository has it."""
        scope = f"repository:{repository}:pull,push"
        try:
            self._call(
                "HEAD", f"/v2/{repository}/blobs/{digest}", scope=scope, what=f"check {digest[:19]}"
            )
            return False
        except NotFoundError:
            pass
        started = self._call(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            body=b"",
            scope=scope,
            what=f"start the upload of {digest[:19]} to {self.host}/{repository}",
        )
        location = started.header("Location")
        if not location:
            raise RegistryError(f"{self.host}/{repository}: the upload has no Location")
        parsed = urllib.parse.urlsplit(location)
        query = (parsed.query + "&" if parsed.query else "") + urllib.parse.urlencode(
            {"digest": digest}
        )
        self._call(
            "PUT",
            f"{parsed.path}?{query}",
            headers={"Content-Type": "application/octet-stream"},
            body=data,
            scope=scope,
            what=f"upload {digest[:19]} to {self.host}/{repository}",
        )
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
        data = json.loads(self.blob(repository, str(config["digest"])))
        return data if isinstance(data, dict) else {}

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
            raise _status_error(exc.code, f"{what}: token endpoint") from None
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
            with _OPENER.open(request, timeout=self.timeout) as fh:
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
        detail = _error_detail(resp.body)
        where = what or self.host
        if resp.status in (401, 403):
            return AuthError(
                f"{where}: {'unauthorized' if resp.status == 401 else 'forbidden'} "
                f"(HTTP {resp.status}{': ' + detail if detail else ''})",
                hint="check REGISTRY_USERNAME/REGISTRY_PASSWORD (or GITHUB_TOKEN for ghcr.io)",
            )
        if resp.status == 404:
            return NotFoundError(f"{where}: not found (HTTP 404{': ' + detail if detail else ''})")
        return _status_error(resp.status, where, detail)


def _status_error(status: int, what: str, detail: str = "") -> RegistryError:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    text = f"{what}: the registry answered HTTP {status} {phrase}" + (
        f" ({detail})" if detail else ""
    )
    return (TransientRegistryError if status in TRANSIENT_STATUS else RegistryError)(text)


def _error_detail(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    errors = data.get("errors") if isinstance(data, dict) else None
    if errors and isinstance(errors, list) and isinstance(errors[0], dict):
        return str(errors[0].get("message") or errors[0].get("code") or "")
    return ""


def _next_link(header: str) -> str | None:
    """The path of ``Link: </v2/...?last=x&n=1000>; rel="next"``."""
    match = re.search(r"<([^>]+)>\s*;\s*rel=\"?next\"?", header)
    if not match:
        return None
    parsed = urllib.parse.urlsplit(match.group(1))
    return parsed.path + (f"?{parsed.query}" if parsed.query else "")


# --- constructors for the edge (values from settings and the environment, passed in) ---


def retry_policy(extra: Mapping[str, Any], environ: Mapping[str, str]) -> RetryPolicy:
    """``[tool.pipeline.retry]`` (``Settings.extra["retry"]``), then
    ``REGISTRY_RETRY_ATTEMPTS`` / ``REGISTRY_RETRY_SECONDS`` from ``environ``."""
    data = dict(extra.get("retry", {}) or {})
    if environ.get("REGISTRY_RETRY_ATTEMPTS"):
        data["attempts"] = environ["REGISTRY_RETRY_ATTEMPTS"]
    if environ.get("REGISTRY_RETRY_SECONDS"):
        data["max_seconds"] = environ["REGISTRY_RETRY_SECONDS"]
    return RetryPolicy.from_mapping(data)


def _warn_stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


def client_for(
    host: str,
    *,
    extra: Mapping[str, Any],
    environ: Mapping[str, str],
    warn: Callable[[str], None] = _warn_stderr,
) -> RegistryClient:
    """A client for ``host``: credentials from ``environ``, retries from settings and
    ``environ``; each retry is reported through ``warn``."""
    return RegistryClient(
        host,
        credentials=credentials_for(host, environ),
        retry=retry_policy(extra, environ),
        on_retry=lambda n, exc: warn(f"retrying (attempt {n + 1}): {exc}"),
    )
