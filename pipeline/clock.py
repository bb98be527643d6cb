"""The one UTC timestamp format of records, history lines, labels and scan results:
``2026-11-29T23:14:32Z``, and its reading back."""

from __future__ import annotations

from datetime import UTC, datetime

STAMP = "%Y-%m-%dT%H:%M:%SZ"
#: The same instant where a colon cannot go (a tag name): digits only, to the microsecond.
TAG_STAMP = "%Y%m%d%H%M%S%f"


def utc_stamp(moment: datetime | None = None) -> str:
    """``moment`` (default: now) in UTC as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime(STAMP)


def utc_from_epoch(epoch: int) -> str:
    """Seconds since the epoch (``SOURCE_DATE_EPOCH``, a commit time) as a UTC stamp."""
    return datetime.fromtimestamp(epoch, UTC).strftime(STAMP)


def parse_utc(text: str) -> datetime:
    """A stamp (``Z`` or an offset) back to an aware datetime; ``ValueError`` if it is none."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
