"""Direct delivery's manners: per-recipient-domain limits and a warm-up schedule for a new
sending IP.

Large receivers slow down or refuse a sender that opens too many connections or sends too
fast, and they judge a new IP by how gently its volume grows. Two limits follow:

- per recipient domain, at most `max_connections` transactions at once and `per_minute`
  messages a minute (a token bucket holding up to `burst`); a message that would wait
  up to `max_wait` seconds for its turn waits, one that would wait longer is held back
  (`domain_throttled`) and retried when its turn comes;
- per sending IP, a daily cap from a schedule starting on a date (e.g. 50, 100, 500,
  1000, 5000, ... then none); a message over the day's cap is held back (`warmup_cap`)
  until the next UTC day.

Held-back messages never connected, so they do not spend their retry budget
(`Outcome.retry_at`, `delivery.machine`).

The arithmetic (`take`, `warmup_cap`, `next_day`) is pure. `Throttle` holds the state.
Where it lives: the domain buckets and connection counts are this process's (with N
worker processes a domain sees up to N times the limits; set them per process). The
warm-up count must not reset on a restart or multiply with processes, so it lives in
the database: each process reserves blocks of the day's cap (`WarmupLedger`,
`delivery.warmup.DbLedger`). A block a process does not use before it stops is lost for
the day: the cap errs on the side of sending less.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol

from carepost.clock import Clock, system_clock
from carepost.delivery.outcome import Outcome, held_back


@dataclass(frozen=True)
class DomainLimits:
    max_connections: int = 5
    per_minute: float = 120.0
    burst: int = 20

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.per_minute <= 0 or self.burst < 1:
            raise ValueError("domain limits must be positive")


# Starting points for the largest receivers; operators tune them (config.py).
KNOWN_DOMAINS: Mapping[str, DomainLimits] = {
    "gmail.com": DomainLimits(max_connections=10, per_minute=600, burst=50),
    "googlemail.com": DomainLimits(max_connections=10, per_minute=600, burst=50),
    "outlook.com": DomainLimits(max_connections=5, per_minute=300, burst=30),
    "hotmail.com": DomainLimits(max_connections=5, per_minute=300, burst=30),
    "live.com": DomainLimits(max_connections=5, per_minute=300, burst=30),
    "yahoo.com": DomainLimits(max_connections=5, per_minute=300, burst=30),
    "aol.com": DomainLimits(max_connections=5, per_minute=300, burst=30),
    "icloud.com": DomainLimits(max_connections=5, per_minute=300, burst=30),
}

DEFAULT_WARMUP = (50, 100, 500, 1000, 5000, 10_000, 20_000, 50_000, 100_000)


@dataclass(frozen=True)
class ThrottleConfig:
    default: DomainLimits = field(default_factory=DomainLimits)
    domains: Mapping[str, DomainLimits] = field(default_factory=lambda: dict(KNOWN_DOMAINS))
    max_wait: float = 30.0  # seconds a message may wait for its domain's turn
    warmup_schedule: Sequence[int] = DEFAULT_WARMUP
    warmup_start: date | None = None  # None: the IP is established, no cap
    warmup_source: str = "default"  # which sending IP the count belongs to
    warmup_block: int = 20  # cap reserved from the shared ledger at a time

    def limits(self, domain: str) -> DomainLimits:
        return self.domains.get(domain, self.default)


# --- pure core ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    tokens: float
    at: datetime


def take(bucket: Bucket | None, limits: DomainLimits, at: datetime) -> tuple[Bucket, float]:
    """Reserve one message's turn: the bucket afterwards and the seconds to wait before
    sending (0: now). A negative balance is turns already promised to waiting messages.
    A caller that will not wait that long keeps the old bucket."""
    rate = limits.per_minute / 60.0
    if bucket is None:
        tokens = float(limits.burst)
    else:
        elapsed = max((at - bucket.at).total_seconds(), 0.0)
        tokens = min(float(limits.burst), bucket.tokens + elapsed * rate)
    tokens -= 1.0
    wait = 0.0 if tokens >= 0 else -tokens / rate
    return Bucket(tokens, at), wait


def warmup_cap(schedule: Sequence[int], start: date | None, day: date) -> int | None:
    """The day's cap, or None for no cap (no schedule, or past its end). Days before the
    start date get the first day's cap: a date set in the future must not mean "none"."""
    if start is None:
        return None
    index = max((day - start).days, 0)
    return schedule[index] if index < len(schedule) else None


def next_day(at: datetime) -> datetime:
    """Midnight UTC after `at`: when the next day's warm-up cap opens."""
    day = at.astimezone(UTC).date() + timedelta(days=1)
    return datetime.combine(day, time(0), tzinfo=UTC)


def check_schedule(schedule: Sequence[int]) -> None:
    if any(cap < 0 for cap in schedule):
        raise ValueError("warm-up caps must not be negative")


# --- state -------------------------------------------------------------------------------


class WarmupLedger(Protocol):
    async def reserve(self, source: str, day: date, want: int, cap: int) -> int:
        """Take up to `want` of the day's `cap` for `source`; returns how many were
        granted (0 when the cap is used up)."""
        ...


@dataclass
class MemoryLedger:
    """One process's ledger (tests, and a single worker that accepts losing the count on
    a restart)."""

    used: dict[tuple[str, date], int] = field(default_factory=dict)

    async def reserve(self, source: str, day: date, want: int, cap: int) -> int:
        have = self.used.get((source, day), 0)
        granted = max(0, min(want, cap - have))
        self.used[(source, day)] = have + granted
        return granted


class Throttle:
    def __init__(
        self,
        config: ThrottleConfig,
        ledger: WarmupLedger | None = None,
        *,
        clock: Clock = system_clock,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        check_schedule(config.warmup_schedule)
        if config.warmup_start is not None and ledger is None:
            raise ValueError("a warm-up schedule needs a ledger to count in")
        self.config = config
        self._ledger = ledger
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, Bucket] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._day: date | None = None
        self._allowance = 0
        self._reserving = asyncio.Lock()

    async def admit(self, domain: str) -> Outcome | None:
        """None: go ahead (after waiting for the domain's turn if it was near). Otherwise
        the held-back outcome: nothing may be sent for now."""
        limits = self.config.limits(domain)
        at = self._clock()
        bucket, wait = take(self._buckets.get(domain), limits, at)
        if wait > self.config.max_wait:
            return held_back("domain_throttled", at + timedelta(seconds=wait))
        refused = await self._warmup(at)
        if refused is not None:
            return refused
        self._buckets[domain] = bucket
        if wait > 0:
            await self._sleep(wait)
        return None

    async def _warmup(self, at: datetime) -> Outcome | None:
        c = self.config
        day = at.astimezone(UTC).date()
        cap = warmup_cap(c.warmup_schedule, c.warmup_start, day)
        if cap is None:
            return None
        async with self._reserving:
            if day != self._day:
                self._day, self._allowance = day, 0
            if self._allowance == 0:
                assert self._ledger is not None
                self._allowance = await self._ledger.reserve(
                    c.warmup_source, day, c.warmup_block, cap
                )
            if self._allowance == 0:
                return held_back("warmup_cap", next_day(at))
            self._allowance -= 1
        return None

    @asynccontextmanager
    async def connection(self, domain: str) -> AsyncIterator[None]:
        """Hold one of the domain's connection slots for a transaction."""
        slots = self._slots.get(domain)
        if slots is None:
            slots = asyncio.Semaphore(self.config.limits(domain).max_connections)
            self._slots[domain] = slots
        async with slots:
            yield
