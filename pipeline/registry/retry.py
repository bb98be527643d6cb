"""Transient registry faults and the retry policy: connection resets, timeouts, 429 and 5xx are
retried with exponential backoff and jitter (tenacity) within a budget of attempts and
seconds; 401, 403 and 404 are not."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class TransientRegistryError(RegistryError):
    """A fault worth retrying: connection reset or refused mid-way, timeout, 429, 5xx."""


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


def retry_policy(extra: Mapping[str, Any], environ: Mapping[str, str]) -> RetryPolicy:
    """``[tool.pipeline.retry]`` (``Settings.extra["retry"]``), then
    ``REGISTRY_RETRY_ATTEMPTS`` / ``REGISTRY_RETRY_SECONDS`` from ``environ``."""
    data = dict(extra.get("retry", {}) or {})
    if environ.get("REGISTRY_RETRY_ATTEMPTS"):
        data["attempts"] = environ["REGISTRY_RETRY_ATTEMPTS"]
    if environ.get("REGISTRY_RETRY_SECONDS"):
        data["max_seconds"] = environ["REGISTRY_RETRY_SECONDS"]
    return RetryPolicy.from_mapping(data)


def warn_stderr(line: str) -> None:

    print(line, file=sys.stderr)
