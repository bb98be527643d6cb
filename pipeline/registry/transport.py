"""The registry's HTTP: urllib with the redirects a registry sends (blob downloads from storage
without our Authorization header), responses, and registry errors said in one line."""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import RegistryError
from pipeline.registry.retry import TRANSIENT_STATUS, TransientRegistryError, parse_retry_after


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


OPENER = urllib.request.build_opener(_RedirectHandler())


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

    def json(self, what: str) -> dict[str, Any]:
        """The body as a JSON object (see ``json_object``)."""
        return json_object(self.body, what, self.header("Content-Type"))


def status_error(status: int, what: str, detail: str = "", retry_after: str = "") -> RegistryError:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    text = f"{what}: the registry answered HTTP {status} {phrase}" + (
        f" ({detail})" if detail else ""
    )
    if status not in TRANSIENT_STATUS:
        return RegistryError(text)
    error = TransientRegistryError(text)
    error.retry_after = parse_retry_after(retry_after)
    return error


def error_detail(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    errors = data.get("errors") if isinstance(data, dict) else None
    if errors and isinstance(errors, list) and isinstance(errors[0], dict):
        return str(errors[0].get("message") or errors[0].get("code") or "")
    return ""


def next_link(header: str) -> str | None:
    """The path of ``Link: </v2/...?last=x&n=1000>; rel="next"``."""
    match = re.search(r"<([^>]+)>\s*;\s*rel=\"?next\"?", header)
    if not match:
        return None
    parsed = urllib.parse.urlsplit(match.group(1))
    return parsed.path + (f"?{parsed.query}" if parsed.query else "")


class NotFoundError(RegistryError):
    """404: the repository, manifest or blob does not exist."""


class AuthError(RegistryError):
    """401 or 403: wrong or missing credentials, or no permission."""


def json_object(body: bytes, what: str, content_type: str = "") -> dict[str, Any]:
    """A registry answer that must be a JSON object; anything else (an HTML page from a proxy,
    a login wall or a captive portal) is one ``RegistryError``, never a ``JSONDecodeError``."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        kind = content_type.split(";")[0].strip() or "something"
        raise RegistryError(
            f"{what}: the registry answered {kind} ({len(body)} bytes), not JSON",
            hint="check the registry host: a proxy or a login page may be answering",
        )
    return data


def response_error(resp: Response, where: str) -> RegistryError:
    """The typed error of a failed answer: 401/403 point at the credentials, 404 is
    ``NotFoundError``, the rest by status (transient or not, with ``Retry-After``)."""
    detail = error_detail(resp.body)
    if resp.status in (401, 403):
        return AuthError(
            f"{where}: {'unauthorized' if resp.status == 401 else 'forbidden'} "
            f"(HTTP {resp.status}{': ' + detail if detail else ''})",
            hint="check REGISTRY_USERNAME/REGISTRY_PASSWORD (or GITHUB_TOKEN for ghcr.io)",
        )
    if resp.status == 404:
        return NotFoundError(f"{where}: not found (HTTP 404{': ' + detail if detail else ''})")
    return status_error(resp.status, where, detail, resp.header("Retry-After"))
