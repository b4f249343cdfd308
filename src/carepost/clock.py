"""Injected time. Pure cores take `at`; services take a Clock so tests can pin time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def fixed_clock(at: datetime) -> Clock:
    if at.tzinfo is None:
        raise ValueError("fixed_clock needs an aware datetime")
    return lambda: at


def isoformat_utc(at: datetime) -> str:
    """Canonical UTC text form used in hashed records (microseconds, 'Z')."""
    if at.tzinfo is None:
        raise ValueError("naive datetime: carepost stores aware UTC times only")
    # isoformat, not strftime: strftime's %Y does not pad years before 1000 to four
    # digits on glibc ("322-01-24..."), which no parser reads back. Same text otherwise.
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
