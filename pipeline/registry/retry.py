"""Transient registry faults and the retry policy: connection resets, timeouts, 429 and 5xx are
retried with exponential backoff and jitter (tenacity) within a budget of attempts and
seconds; 401, 403 and 404 are not."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from pipeline.errors import CommandError, RegistryError

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class TransientRegistryError(RegistryError):
    """A fault worth retrying: connection reset or refused mid-way, timeout, 429, 5xx.
    ``retry_after``: the seconds the registry asked for (``Retry-After``), if it did."""

    retry_after: float | None = None


def parse_retry_after(value: str, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds (``7``) or an HTTP-date
    (``Wed, 21 Oct 2026 07:28:00 GMT``); None when absent or unreadable."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


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


def _asked(state: RetryCallState) -> float:
    """The ``Retry-After`` seconds the last failure carried (0: none)."""
    exc = state.outcome.exception() if state.outcome is not None else None
    return float(getattr(exc, "retry_after", None) or 0.0)


def _stop(policy: RetryPolicy) -> Callable[[RetryCallState], bool]:
    def stop(state: RetryCallState) -> bool:
        """Out of attempts or seconds, or the registry asked for a longer wait than the budget
        has left (coming back early is impolite; waiting longer breaks the budget)."""
        spent = state.seconds_since_start or 0.0
        return (
            state.attempt_number >= policy.attempts
            or spent >= policy.max_seconds
            or _asked(state) > policy.max_seconds - spent
        )

    return stop


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(
        multiplier=policy.initial, max=policy.max_wait, jitter=policy.jitter
    )

    def wait(state: RetryCallState) -> float:
        """The backoff, or the ``Retry-After`` the registry asked for if longer."""
        return max(backoff(state), _asked(state))

    return wait


def _gave_up(exc: TransientRegistryError, attempts: int, policy: RetryPolicy) -> None:
    if exc.retry_after is not None and attempts < policy.attempts:
        exc.message = (
            f"{exc.message} (the registry asked to wait {exc.retry_after:g}s, more than "
            f"the {policy.max_seconds:g}s retry budget allows; gave up after {attempts} "
            f"attempt{'s' if attempts > 1 else ''})"
        )
    elif attempts > 1:
        exc.message = f"{exc.message} (gave up after {attempts} attempts)"


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    retry_on: tuple[type[BaseException], ...] = (TransientRegistryError,),
    on_retry: Callable[[int, BaseException], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """``fn()`` retried on ``retry_on`` exceptions per ``policy``: backoff with jitter, or the
    registry's ``Retry-After`` when longer, never past the budget; the last error is
    re-raised, saying why it gave up."""

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(state.attempt_number, exc)

    kwargs: dict[str, Any] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    retrying = Retrying(
        stop=_stop(policy),
        wait=_wait(policy),
        retry=retry_if_exception_type(retry_on),
        before_sleep=before_sleep,
        reraise=True,
        **kwargs,
    )
    try:
        return retrying(fn)
    except TransientRegistryError as exc:
        _gave_up(exc, retrying.statistics.get("attempt_number", 1), policy)
        raise


def retry_command(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """``fn()``, a command that talks to a registry (``imagetools create``/``inspect``, a
    push), retried like a registry call when it fails with a transient fault in its stderr
    (a reset, an EOF, a 5xx); other failures are raised as they are."""

    def attempt() -> T:
        try:
            return fn()
        except TransientRegistryError:
            raise
        except CommandError as exc:
            if not is_transient(exc.stderr or exc.message):
                raise
            raise TransientRegistryError(
                exc.message, argv=exc.argv, stderr=exc.stderr, hint=exc.hint
            ) from None

    return call_with_retry(attempt, policy, on_retry=on_retry)


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
