"""Pure HTTP helpers: limits, path normalisation, header tokens, credentials, redaction,
and the gateway's own responses.  No I/O here, so all of it is table-tested."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from http import HTTPStatus

# Request limits, after nginx (large_client_header_buffers 4 8k) and Envoy (100 headers).
MAX_URL = 8192  # bytes of request target: 414 beyond
MAX_HEADER_LINE = 8192  # bytes of one header name + value: 431 beyond
MAX_HEADERS = 100  # header fields: 431 beyond
MAX_HEAD = 32768  # bytes of the whole head: 431 beyond

STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_FORBIDDEN_ESCAPES = frozenset({0x2F, 0x5C, 0x00})  # "/", "\" and NUL: never decoded or passed

# Query parameters whose values never reach the access log.
SECRET_PARAMS = frozenset(
    {
        "access_token",
        "api-key",
        "api_key",
        "apikey",
        "auth",
        "client_secret",
        "code",
        "id_token",
        "jwt",
        "key",
        "password",
        "passwd",
        "pwd",
        "refresh_token",
        "secret",
        "session",
        "sig",
        "signature",
        "token",
        "x-amz-credential",
        "x-amz-signature",
        "x-goog-signature",
    }
)
REDACTED = "REDACTED"


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


def _decode_escapes(raw: bytes) -> bytes | None:
    """Decode percent-escapes of unreserved characters, upper-case the others.

    None for a malformed escape or an escaped "/", "\\" or NUL (they would change the
    path's meaning between the gateway and an upstream that decodes them).
    """
    out = bytearray()
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c != 0x25:  # "%"
            out.append(c)
            i += 1
            continue
        hexpair = raw[i + 1 : i + 3]
        if len(hexpair) != 2 or hexpair[0] not in _HEX or hexpair[1] not in _HEX:
            return None
        value = int(hexpair, 16)
        if value in _FORBIDDEN_ESCAPES:
            return None
        if value in _UNRESERVED:
            out.append(value)
        else:
            out += b"%" + hexpair.upper()
        i += 3
    return bytes(out)


def normalise_path(raw: bytes) -> bytes | None:
    """The path a request is routed and forwarded by (RFC 3986 section 6.2.2), or None (400).

    Unreserved escapes are decoded, empty and "." segments dropped, ".." resolved; a ".."
    above the root, an escaped "/" or "\\", a literal "\\" or a bad escape give None.
    """
    if 37 not in raw and 92 not in raw and b"/." not in raw and b"//" not in raw:  # "%", "\\"
        return raw if raw[:1] == b"/" else None  # the common case: already normal
    if raw[:1] != b"/":
        return None
    if b"\\" in raw:
        return None
    decoded = _decode_escapes(raw) if b"%" in raw else raw
    if decoded is None:
        return None
    segments: list[bytes] = []
    parts = decoded.split(b"/")
    for part in parts[1:]:
        if part == b"..":
            if not segments:
                return None
            segments.pop()
        elif part and part != b".":
            segments.append(part)
    last = parts[-1]
    trailing = segments and last in (b"", b".", b"..")
    return b"/" + b"/".join(segments) + (b"/" if trailing else b"")


def split_target(url: bytes) -> tuple[bytes, bytes, bytes | None]:
    """(host from an absolute-form target or b"", path, query or None); fragments dropped."""
    url = url.split(b"#", 1)[0]
    host = b""
    if url[:1] != b"/":
        lower = url[:8].lower()
        if lower.startswith((b"http://", b"https://")):
            rest = url[url.index(b"//") + 2 :]
            slash = rest.find(b"/")
            query_at = rest.find(b"?")
            cut = min(i for i in (slash, query_at, len(rest)) if i >= 0)
            host, url = rest[:cut], rest[cut:]
            if url[:1] != b"/":
                url = b"/" + url
        elif url == b"*":
            url = b"/"
    path, sep, query = url.partition(b"?")
    return host.rsplit(b"@", 1)[-1], path, query if sep else None


def connection_tokens(values: Iterable[bytes]) -> frozenset[bytes]:
    """The lower-case tokens of every Connection header (there may be several)."""
    tokens: set[bytes] = set()
    for value in values:
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return frozenset(tokens)


def filter_response_head(
    lines: list[bytes], drop: frozenset[bytes]
) -> tuple[list[bytes], bytes | None]:
    """The upstream's header lines to pass on (CRLF-terminated) and its Content-Length.

    Drops ``drop`` and the headers the upstream named in its own Connection header(s).
    """
    parts: list[bytes] = []
    named: list[bytes] = []
    length: bytes | None = None
    kept = False
    for line in lines:
        if not line:
            continue
        if line[0] in (32, 9):  # obs-fold continuation of the previous header
            if kept:
                parts.append(line + b"\r\n")
            continue
        colon = line.find(b":")
        lname = line[:colon].strip().lower()
        kept = lname not in drop
        if kept:
            parts.append(line + b"\r\n")
        elif lname == b"content-length":
            length = line[colon + 1 :].strip()
        elif lname == b"connection":
            named.append(line[colon + 1 :])
    if named:  # rare: filter again without the headers the upstream named
        tokens = connection_tokens(named) - drop
        if tokens:
            parts = filter_response_head(lines, drop | tokens)[0]
    return parts, length


def presented_key(value: bytes) -> bytes:
    """The API key in a header value: ``Bearer <key>`` (any case, RFC 9110) or the raw value."""
    scheme, sep, rest = value.strip().partition(b" ")
    if sep and scheme.lower() == b"bearer":
        return rest.strip()
    return value.strip()


def redact_query(target: str) -> str:
    """The request target with secret query values replaced (for the access log)."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    out = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        if eq and name.lower() in SECRET_PARAMS:
            pair = f"{name}={REDACTED}"
        out.append(pair)
    return f"{path}?{'&'.join(out)}"


class TrustedPeers:
    """Which client addresses are proxies whose forwarding headers are believed."""

    __slots__ = ("enabled", "everyone", "networks")

    def __init__(self, enabled: bool, cidrs: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        self.enabled = enabled
        self.everyone = enabled and not self.networks

    def trusts(self, address: str) -> bool:
        if self.everyone or not self.enabled:
            return self.everyone
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


_WEBSOCKET_KEY = re.compile(rb"^[A-Za-z0-9+/]{22}==$")


def websocket_key_ok(value: bytes | None) -> bool:
    return value is not None and _WEBSOCKET_KEY.match(value.strip()) is not None


def error_response(
    status: int,
    message: str,
    request_id: str,
    keep: bool,
    extra: bytes = b"",
    head_only: bool = False,
) -> bytes:
    body = json.dumps({"error": message, "status": status, "request_id": request_id}).encode()
    head = (
        b"%bContent-Type: application/json\r\nContent-Length: %d\r\nX-Request-ID: %b\r\n%b%b\r\n"
        % (
            status_line(status),
            len(body),
            request_id.encode(),
            extra,
            b"" if keep else b"Connection: close\r\n",
        )
    )
    return head if head_only else head + body


def simple_response(
    status: int, body: bytes, content_type: bytes, request_id: str, keep: bool, head_only: bool
) -> bytes:
    head = b"%bContent-Type: %b\r\nContent-Length: %d\r\nX-Request-ID: %b\r\n%b\r\n" % (
        status_line(status),
        content_type,
        len(body),
        request_id.encode(),
        b"" if keep else b"Connection: close\r\n",
    )
    return head if head_only else head + body
