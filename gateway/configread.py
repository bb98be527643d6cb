"""Typed reading of TOML tables that knows each value's key path (for one-line errors)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .configmodel import ConfigError

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# A header field value: visible ASCII, spaces and tabs, obs-text; no NUL, CR, LF or controls.
_FIELD_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_NUMBER = 1e9  # larger numbers (seconds, rates) are mistakes, and inf would overflow


def show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError, RecursionError):
        text = "a nested value"
    return text if len(text) <= 80 else text[:77] + "..."


def header_name(value: str, where: str) -> str:
    if not _TOKEN.match(value):
        raise ConfigError(where, f"is not a valid header name, got {show(value)}")
    return value


def header_value(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _FIELD_VALUE.match(value):
        raise ConfigError(
            where, f"must be a single-line string without control characters, got {show(value)}"
        )
    return value


class Table:
    """A TOML table being read: typed getters that know their key path."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(where, f"must be a table, got {show(data)}")
        self.data: dict[str, Any] = data
        self.where = where
        self.seen: set[str] = set()

    def path(self, key: str) -> str:
        """The key path, with a key that is not a bare TOML key quoted (one line always)."""
        if not _BARE_KEY.match(key):
            key = json.dumps(key)
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key)

    def table(self, key: str) -> Table | None:
        value = self.raw(key)
        return None if value is None else Table(value, self.path(key))

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.raw(key)
        if value is None:
            if required or default is None:
                raise ConfigError(self.path(key), "is required")
            return default
        if not isinstance(value, str) or not value:
            raise ConfigError(self.path(key), f"must be a non-empty string, got {show(value)}")
        if not _FIELD_VALUE.match(value) or value != value.strip():
            raise ConfigError(
                self.path(key),
                f"must not have control characters or surrounding spaces, got {show(value)}",
            )
        return value

    def opt_string(self, key: str) -> str | None:
        return self.string(key) if self.has(key) else self.raw(key)

    def number(
        self,
        key: str,
        default: float,
        *,
        allow_zero: bool = False,
        minimum: float = 0.0,
        maximum: float = MAX_NUMBER,
    ) -> float:
        value = self.raw(key)
        if value is None:
            return default
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not (value >= 0 if allow_zero else value > 0):
            kind = "a non-negative number" if allow_zero else "a positive number"
            raise ConfigError(self.path(key), f"must be {kind}, got {show(value)}")
        if value > maximum or (value and value < minimum):
            raise ConfigError(
                self.path(key), f"must be between {minimum:g} and {maximum:g}, got {show(value)}"
            )
        return float(value)

    def integer(
        self, key: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(self.path(key), f"must be an integer >= {minimum}, got {show(value)}")
        top = maximum if maximum is not None else 2**53
        if value > top:
            raise ConfigError(self.path(key), f"must be an integer <= {top}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.path(key), f"must be true or false, got {show(value)}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, list):
            raise ConfigError(self.path(key), f"must be a list of strings, got {show(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise ConfigError(
                    f"{self.path(key)}[{i}]", f"must be a non-empty string, got {show(item)}"
                )
            if not _FIELD_VALUE.match(item) or item != item.strip():
                raise ConfigError(
                    f"{self.path(key)}[{i}]",
                    f"must not have control characters or surrounding spaces, got {show(item)}",
                )
        return tuple(value)

    def done(self) -> None:
        for key in self.data:
            if key not in self.seen:
                raise ConfigError(self.path(key), "unknown key")
