"""Route matching: a table compiled once per config load.

Paths are prefixes matched on segment boundaries (``/api`` matches ``/api`` and
``/api/x``, not ``/apix``); ``{name}`` segments match one path segment.  The most
specific match wins (more segments, then more literal segments, then a host-bound
route before a host-less one).  Routes sharing one path and host form a group; the
request method then picks the route, and a group without the method answers 405.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class Group(Generic[T]):
    """Routes sharing a path pattern and host; ``by_method`` maps method -> route."""

    pattern: str
    host: str | None
    prefix: str  # literal prefix for routes without parameters
    regex: re.Pattern[str] | None
    by_method: dict[str, T] = field(default_factory=dict)
    any_method: T | None = None
    allow: str = ""

    def pick(self, method: str) -> T | None:
        route = self.by_method.get(method)
        if route is None:
            route = self.any_method
            if route is None and method == "HEAD":
                route = self.by_method.get("GET")
        return route


# (group, path parameters, the rest of the path after the matched part)
Match = tuple[Group[T], dict[str, str], str]
_NO_PARAMS: dict[str, str] = {}


def _compile(pattern: str) -> tuple[str, re.Pattern[str] | None]:
    trimmed = pattern.rstrip("/")
    if "{" not in trimmed:
        return trimmed, None
    out = []
    for segment in trimmed.strip("/").split("/"):
        if segment.startswith("{"):
            out.append(f"/(?P<{segment[1:-1]}>[^/]+)")
        else:
            out.append("/" + re.escape(segment))
    return trimmed, re.compile("".join(out) + "(?=/|$)")


class Router(Generic[T]):
    def __init__(self, routes: Sequence[tuple[str, str | None, tuple[str, ...], T]]) -> None:
        """``routes``: (path pattern, host or None, methods (empty: any), route object)."""
        groups: dict[tuple[str, str | None], Group[T]] = {}
        order: list[tuple[tuple[int, int, int, int], Group[T]]] = []
        for pattern, host, methods, route in routes:
            key = (pattern.rstrip("/") or "/", host)
            group = groups.get(key)
            if group is None:
                prefix, regex = _compile(pattern)
                group = Group(pattern, host, prefix, regex)
                groups[key] = group
                segments = [s for s in pattern.strip("/").split("/") if s]
                literal = sum(1 for s in segments if not s.startswith("{"))
                rank = (-len(segments), -literal, 0 if host else 1, len(order))
                order.append((rank, group))
            if methods:
                for m in methods:
                    group.by_method.setdefault(m, route)
            elif group.any_method is None:
                group.any_method = route
        for group in groups.values():
            if group.any_method is None:
                allowed = set(group.by_method)
                if "GET" in allowed:
                    allowed.add("HEAD")
                group.allow = ", ".join(sorted(allowed))
        order.sort(key=lambda item: item[0])
        self._groups = [g for _, g in order]
        self.has_hosts = any(g.host is not None for g in self._groups)

    def match(self, host: str, path: str) -> Match[T] | None:
        for g in self._groups:
            if g.host is not None and g.host != host:
                continue
            regex = g.regex
            if regex is None:
                prefix = g.prefix
                if path.startswith(prefix):
                    n = len(prefix)
                    if len(path) == n or path[n] == "/" or not n:
                        return g, _NO_PARAMS, path[n:]
            else:
                m = regex.match(path)
                if m is not None:
                    return g, m.groupdict(), path[m.end() :]
        return None
