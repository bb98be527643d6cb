"""Per-route policies: API-key auth, token-bucket rate limits, CORS, header rules.

Everything here is compiled from the config once, so the per-request work is a few
dict lookups and float operations.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict

from .config import Auth, Cors, HeaderRules, RateLimit

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


class Authenticator:
    """Maps a presented key to its name via its sha256 digest; checks route access.

    Verdicts are cached per presented key in a bounded LRU (keys longer than any real one
    are hashed every time), so no stream of bogus keys can grow the memory.
    """

    __slots__ = ("allowed", "cache", "digests", "header")

    CACHE_SIZE = 1024
    CACHE_KEY_MAX = 256  # bytes

    def __init__(self, auth: Auth, api_keys: tuple[tuple[str, str], ...]) -> None:
        self.header = auth.header.encode()
        self.digests = {digest: name for name, digest in api_keys}
        self.allowed = auth.keys
        self.cache: OrderedDict[bytes, tuple[int, str | None]] = OrderedDict()

    def check(self, key: bytes | None) -> tuple[int, str | None]:
        """(0 | 401 | 403, key name) for the presented key (``Bearer`` already removed)."""
        if not key:
            return 401, None
        cache = self.cache
        verdict = cache.get(key)
        if verdict is not None:
            cache.move_to_end(key)
            return verdict
        name = self.digests.get(hashlib.sha256(key).hexdigest())
        if name is None:
            verdict = (401, None)
        else:
            verdict = (403, name) if name not in self.allowed else (0, name)
        if len(key) <= self.CACHE_KEY_MAX:
            cache[key] = verdict
            if len(cache) > self.CACHE_SIZE:
                cache.popitem(last=False)
        return verdict


class RateLimiter:
    """Token buckets keyed by API key name or client address, O(1) per request.

    The buckets live in an LRU of fixed size: each request moves its bucket to the end
    and drops, from the front, buckets that have refilled completely (they equal a fresh
    one) and, past the cap, the least recently used.  With N workers each process holds
    its own buckets, so the configured rate and burst are divided among the workers
    (connections are spread evenly by the kernel with SO_REUSEPORT).
    """

    __slots__ = ("buckets", "burst", "by_key", "cap", "full_after", "rate")

    def __init__(self, spec: RateLimit, workers: int = 1, cap: int = 100_000) -> None:
        self.rate = spec.rate / workers
        self.burst = max(1.0, spec.burst / workers)
        self.by_key = spec.by == "key"
        self.cap = cap
        self.full_after = self.burst / self.rate  # seconds for an empty bucket to refill
        self.buckets: OrderedDict[str, list[float]] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """0.0 when allowed, else the seconds to wait before a token is available."""
        buckets = self.buckets
        b = buckets.get(key)
        if b is None:
            self._expire(now)
            buckets[key] = [self.burst - 1.0, now]
            return 0.0
        buckets.move_to_end(key)
        tokens = b[0] + (now - b[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return 0.0
        b[0] = tokens
        return (1.0 - tokens) / self.rate

    def _expire(self, now: float) -> None:
        """Drop full buckets from the front (a few per call), and the oldest past the cap."""
        buckets = self.buckets
        cutoff = now - self.full_after
        for _ in range(4):
            if not buckets:
                return
            oldest = next(iter(buckets.values()))
            if oldest[1] > cutoff:
                break
            buckets.popitem(last=False)
        while len(buckets) >= self.cap:
            buckets.popitem(last=False)

    def sweep(self, now: float) -> None:
        """Drop every bucket that has refilled completely."""
        cutoff = now - self.full_after
        buckets = self.buckets
        while buckets and next(iter(buckets.values()))[1] <= cutoff:
            buckets.popitem(last=False)


def retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


class CorsPolicy:
    __slots__ = ("_allow_headers", "any_origin", "origins", "preflight_tail", "response_tail")

    def __init__(self, cors: Cors) -> None:
        self.any_origin = "*" in cors.allow_origins
        self.origins = frozenset(o.encode() for o in cors.allow_origins)
        tail = b""
        if cors.allow_credentials:
            tail += b"Access-Control-Allow-Credentials: true\r\n"
        resp = tail
        if cors.expose_headers:
            resp += (
                b"Access-Control-Expose-Headers: "
                + ", ".join(cors.expose_headers).encode()
                + b"\r\n"
            )
        self.response_tail = resp
        pre = (
            tail
            + b"Access-Control-Allow-Methods: "
            + ", ".join(cors.allow_methods).encode()
            + b"\r\n"
        )
        pre += b"Access-Control-Max-Age: " + str(cors.max_age).encode() + b"\r\n"
        self.preflight_tail = pre
        self._allow_headers = ", ".join(cors.allow_headers).encode()

    def allow_origin(self, origin: bytes) -> bytes | None:
        """The Access-Control-Allow-Origin header line for ``origin``, or None."""
        if self.any_origin:
            return b"Access-Control-Allow-Origin: *\r\n"
        if origin in self.origins:
            return b"Access-Control-Allow-Origin: " + origin + b"\r\nVary: Origin\r\n"
        return None

    def preflight(self, origin: bytes, requested_headers: bytes | None) -> bytes | None:
        line = self.allow_origin(origin)
        if line is None:
            return None
        allow = self._allow_headers or (requested_headers or b"")
        extra = b"Access-Control-Allow-Headers: " + allow + b"\r\n" if allow else b""
        return line + self.preflight_tail + extra


class HeaderRewriter:
    """Header removals (lower-case names) and additions (ready-made header lines)."""

    __slots__ = ("add", "remove")

    def __init__(self, rules: HeaderRules) -> None:
        self.remove = frozenset(n.encode() for n in rules.remove)
        self.add = b"".join(f"{n}: {v}\r\n".encode() for n, v in rules.add)


_counter = 0
_prefix = ""


def new_request_id() -> str:
    global _counter, _prefix
    if not _prefix:
        import os

        _prefix = os.urandom(6).hex()
    _counter += 1
    return f"{_prefix}{_counter:08x}"


def valid_request_id(value: bytes) -> bool:
    """Printable ASCII without spaces or quotes, at most 128 bytes."""
    return 0 < len(value) <= 128 and all(33 <= c < 127 and c not in (34, 92) for c in value)


def monotonic() -> float:
    return time.monotonic()
