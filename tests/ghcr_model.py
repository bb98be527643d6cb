"""A model of ghcr.io for the tests: the real ``registry:2`` on 127.0.0.1:5000 behind a small
local front (127.0.0.1, a random port) that behaves as ghcr.io does where it differs.

From ghcr.io's and the Docker token-auth spec's documented behaviour:

- ``GET /token?scope=repository:OWNER/NAME:pull,push&service=ghcr.io`` with Basic
  ``USER:GITHUB_TOKEN`` answers ``{"token": ...}``; wrong or no credentials: 401;
- every ``/v2/`` call needs ``Authorization: Bearer <token>``, else 401 with
  ``WWW-Authenticate: Bearer realm="http://HOST/token",service="ghcr.io",scope="repository:...:pull"``;
- ``DELETE /v2/.../manifests/...`` answers 405 ``{"errors":[{"code":"UNSUPPORTED",...}]}``
  (every DELETE on /v2/ is counted in ``v2_deletes``);

plus the GitHub Packages REST endpoints retention needs, with their real paths and JSON shapes:

- ``GET /{orgs|users}/{owner}/packages/container/{package_name}/versions`` (``per_page``,
  ``page``, a ``Link`` header), each version ``{"id", "name": "sha256:...", "url",
  "package_html_url", "created_at", "updated_at", "html_url", "metadata": {"package_type":
  "container", "container": {"tags": [...]}}}``;
- ``DELETE /{orgs|users}/{owner}/packages/container/{package_name}/versions/{id}`` -> 204;
- ``Authorization: Bearer GITHUB_TOKEN``; errors ``{"message", "documentation_url"}`` (401 bad
  credentials, 404 for an unknown package, owner or version, or the wrong owner kind).

An image ``HOST/OWNER/a/b`` is package ``a/b`` (``a%2Fb`` in a path) of ``OWNER``. A package's
versions are its tagged manifests and the manifests their indexes list (untagged), as ghcr.io
shows them; ids are stable per digest. A version is deleted in the real registry (the model's
own back door, not the counted front).
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import re
import secrets
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

UPSTREAM = ("127.0.0.1", 5000)
DOCS = "https://docs.github.com/rest/packages/packages"
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
_VERSIONS = re.compile(
    r"^/(?P<kind>orgs|users)/(?P<owner>[^/]+)/packages/container/(?P<package>[^/]+)/versions"
    r"(?:/(?P<id>[^/]+))?/?$"
)
_MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
_REPO = re.compile(r"^/v2/(?P<name>.+)/(?:manifests|blobs|tags)/")


@dataclass
class GhcrModel:
    """The model's settings and what it saw. ``owner_kind``: ``orgs`` or ``users`` (the other
    path answers 404, as GitHub's does)."""

    user: str = "octocat"
    token: str = field(default_factory=lambda: "ghp_" + secrets.token_hex(18), repr=False)
    owner_kind: str = "orgs"
    owner: str = "test"
    host: str = ""
    v2_deletes: int = 0
    api_deletes: list[int] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    _bearers: set[str] = field(default_factory=set, repr=False)
    _ids: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)
    _first_seen: dict[int, str] = field(default_factory=dict, repr=False)
    _next_id: Iterator[int] = field(default_factory=lambda: itertools.count(1001), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}"

    def env(self) -> dict[str, str]:
        """What a job on GitHub has: the registry login and the API base (for tests)."""
        return {
            "REGISTRY_USERNAME": self.user,
            "REGISTRY_PASSWORD": self.token,
            "GITHUB_TOKEN": self.token,
            "GITHUB_API_URL": self.api_url,
        }

    # -- the registry side (the model's back door to registry:2) --

    def upstream(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(*UPSTREAM, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def versions(self, package: str) -> list[dict[str, Any]] | None:
        """ghcr.io's versions of ``OWNER/package`` (newest id first), or None if it has none."""
        repo = f"{self.owner}/{package}"
        status, _, body = self.upstream("GET", f"/v2/{repo}/tags/list?n=10000")
        tags = (json.loads(body).get("tags") or []) if status == 200 else []
        by_digest: dict[str, list[str]] = {}
        children: list[str] = []
        for tag in tags:
            status, headers, body = self.upstream(
                "GET", f"/v2/{repo}/manifests/{tag}", {"Accept": ACCEPT}
            )
            if status != 200:
                continue
            digest = _header(headers, "Docker-Content-Digest")
            by_digest.setdefault(digest, []).append(tag)
            data = json.loads(body)
            children += [str(m["digest"]) for m in data.get("manifests") or []]
        for child in children:
            by_digest.setdefault(child, [])
        if not by_digest:
            return None
        result = []
        for digest, names in by_digest.items():
            ident = self._id(package, digest)
            when = self._first_seen[ident]
            base = f"{self.api_url}/{self.owner_kind}/{self.owner}/packages/container"
            quoted = urllib.parse.quote(package, safe="")
            result.append(
                {
                    "id": ident,
                    "name": digest,
                    "url": f"{base}/{quoted}/versions/{ident}",
                    "package_html_url": f"https://github.com/{self.owner}/packages/container/"
                    f"package/{quoted}",
                    "created_at": when,
                    "updated_at": when,
                    "html_url": f"https://github.com/{self.owner}/packages/container/{quoted}/"
                    f"{ident}",
                    "metadata": {
                        "package_type": "container",
                        "container": {"tags": sorted(names)},
                    },
                }
            )
        return sorted(result, key=lambda v: -int(v["id"]))

    def _id(self, package: str, digest: str) -> int:
        with self._lock:
            key = (package, digest)
            if key not in self._ids:
                self._ids[key] = next(self._next_id)
                stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                self._first_seen[self._ids[key]] = stamp
            return self._ids[key]

    def delete_version(self, package: str, ident: int) -> bool:
        versions = self.versions(package) or []
        match = [v for v in versions if v["id"] == ident]
        if not match:
            return False
        status, _, _ = self.upstream(
            "DELETE", f"/v2/{self.owner}/{package}/manifests/{match[0]['name']}"
        )
        if status not in (202, 404):
            raise AssertionError(f"model: registry:2 refused the delete ({status})")
        self.api_deletes.append(ident)
        return True


def _header(headers: dict[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return ""


def _handler(model: GhcrModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def handle(self) -> None:
            # Docker tries HTTPS first on an insecure registry and falls back to plain HTTP
            # when the answer to its TLS hello is an HTTP response, as registry:2 gives.
            try:
                first = self.connection.recv(1, socket.MSG_PEEK)
            except OSError:
                return
            if first == b"\x16":
                self.connection.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nplain HTTP here\n")
                return
            super().handle()

        def _route(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            with model._lock:
                model.requests.append((self.command, path))
            body = self._body()
            if path == "/token":
                self._token()
            elif path.startswith("/v2/") or path == "/v2":
                self._v2(path, body)
            elif _VERSIONS.match(path):
                self._packages(_VERSIONS.match(path))  # type: ignore[arg-type]
            else:
                self._json(404, {"message": "Not Found", "documentation_url": DOCS})

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _route

        # -- plumbing --

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(data).encode()
            self._send(status, {"Content-Type": "application/json", **(headers or {})}, body)

        # -- /token --

        def _token(self) -> None:
            auth = self.headers.get("Authorization", "")
            kind, _, value = auth.partition(" ")
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                user = password = ""
            if kind.lower() != "basic" or not user or password != model.token:
                self._json(
                    401,
                    {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                )
                return
            token = base64.b64encode(secrets.token_bytes(24)).decode()
            with model._lock:
                model._bearers.add(token)
            self._json(200, {"token": token})

        # -- /v2/ --

        def _v2(self, path: str, body: bytes) -> None:
            if self.command == "DELETE":
                with model._lock:
                    model.v2_deletes += 1
            kind, _, value = self.headers.get("Authorization", "").partition(" ")
            if kind.lower() != "bearer" or value not in model._bearers:
                repo = _REPO.match(path)
                scope = f',scope="repository:{repo.group("name")}:pull"' if repo else ""
                challenge = f'Bearer realm="http://{model.host}/token",service="ghcr.io"{scope}'
                self._json(
                    401,
                    {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                    {"WWW-Authenticate": challenge},
                )
                return
            if self.command == "DELETE" and _MANIFEST.match(path):
                self._json(
                    405,
                    {
                        "errors": [
                            {
                                "code": "UNSUPPORTED",
                                "message": "The operation is unsupported.",
                            }
                        ]
                    },
                )
                return
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in _HOP and k.lower() != "authorization"
            }
            headers["Host"] = model.host
            if body or self.command in ("PUT", "POST", "PATCH"):
                headers["Content-Length"] = str(len(body))
            status, answer, content = model.upstream(self.command, self.path, headers, body)
            out = {k: v for k, v in answer.items() if k.lower() not in _HOP | {"content-length"}}
            if self.command == "HEAD":
                self.send_response(status)
                for key, value in out.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", _header(answer, "Content-Length") or "0")
                self.end_headers()
                return
            self._send(status, out, content)

        # -- the GitHub Packages REST API --

        def _packages(self, match: re.Match[str]) -> None:
            auth = self.headers.get("Authorization", "")
            kind, _, value = auth.partition(" ")
            if kind.lower() not in ("bearer", "token") or value != model.token:
                self._json(401, {"message": "Bad credentials", "documentation_url": DOCS})
                return
            package = urllib.parse.unquote(match.group("package"))
            if match.group("kind") != model.owner_kind or match.group("owner") != model.owner:
                self._json(404, {"message": "Not Found", "documentation_url": DOCS})
                return
            versions = model.versions(package)
            if versions is None:
                self._json(404, {"message": "Package not found.", "documentation_url": DOCS})
                return
            ident = match.group("id")
            if ident is not None:
                if self.command != "DELETE":
                    self._json(404, {"message": "Not Found", "documentation_url": DOCS})
                elif ident.isdigit() and model.delete_version(package, int(ident)):
                    self._send(204, {}, b"")
                else:
                    self._json(404, {"message": "Not Found", "documentation_url": DOCS})
                return
            if self.command != "GET":
                self._json(404, {"message": "Not Found", "documentation_url": DOCS})
                return
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            per_page = min(int(query.get("per_page", ["30"])[0]), 100)
            page = max(int(query.get("page", ["1"])[0]), 1)
            last = max((len(versions) + per_page - 1) // per_page, 1)
            chunk = versions[(page - 1) * per_page : page * per_page]
            base = f"{model.api_url}{urllib.parse.urlsplit(self.path).path}"
            links = []
            if page < last:
                links.append(f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"')
                links.append(f'<{base}?per_page={per_page}&page={last}>; rel="last"')
            if page > 1:
                links.append(f'<{base}?per_page={per_page}&page={page - 1}>; rel="prev"')
                links.append(f'<{base}?per_page={per_page}&page=1>; rel="first"')
            self._json(200, chunk, {"Link": ", ".join(links)} if links else {})

    return Handler


class GhcrFront:
    """The running model: ``with GhcrFront() as model:``; ``model.host`` is ``127.0.0.1:PORT``."""

    def __init__(self, model: GhcrModel | None = None) -> None:
        self.model = model or GhcrModel()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.model))
        self._server.daemon_threads = True
        self.model.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> GhcrModel:
        self._thread.start()
        return self.model

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
