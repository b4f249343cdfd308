"""Throttle arithmetic (token bucket, warm-up caps), the stateful throttle with an
injected clock and sleep, and the retry machine's handling of held-back messages."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from random import Random
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.delivery import machine
from carepost.delivery.direct import mail_hosts, recipient_domain
from carepost.delivery.outcome import REASONS, held_back, mx_tls_failed
from carepost.delivery.resolver import MxHost
from carepost.delivery.throttle import (
    DomainLimits,
    MemoryLedger,
    Throttle,
    ThrottleConfig,
    next_day,
    take,
    warmup_cap,
)

T0 = datetime(2026, 11, 24, 12, tzinfo=UTC)


def test_bucket_burst_then_rate() -> None:
    limits = DomainLimits(max_connections=1, per_minute=30, burst=3)  # one per 2 s
    bucket = None
    waits = []
    for _ in range(5):
        bucket, wait = take(bucket, limits, T0)
        waits.append(wait)
    assert waits == [0, 0, 0, 2.0, 4.0]  # promised turns queue up behind each other
    bucket, wait = take(bucket, limits, T0 + timedelta(seconds=60))
    assert wait == 0  # refilled, capped at the burst
    assert bucket.tokens == 2.0


@given(
    st.integers(1, 600),
    st.integers(1, 50),
    st.lists(st.floats(0, 120, allow_nan=False), min_size=1, max_size=40),
)
def test_bucket_never_exceeds_the_rate(per_minute, burst, gaps) -> None:  # type: ignore[no-untyped-def]
    """Sent (at their promised times) within any window from the start: at most the
    burst plus the rate times the window."""
    limits = DomainLimits(per_minute=per_minute, burst=burst)
    bucket, elapsed, sends = None, 0.0, []
    for gap in gaps:
        elapsed += gap
        bucket, wait = take(bucket, limits, T0 + timedelta(seconds=elapsed))
        sends.append(elapsed + wait)
    # timedelta keeps microseconds: allow for their rounding.
    assert len(sends) <= burst + per_minute / 60 * (max(sends) + 1e-5) + 1e-6


def test_warmup_cap_schedule() -> None:
    schedule = (50, 100, 500)
    start = date(2026, 11, 24)
    assert warmup_cap(schedule, None, start) is None
    assert warmup_cap(schedule, start, start - timedelta(days=3)) == 50
    assert [warmup_cap(schedule, start, start + timedelta(days=i)) for i in range(4)] == [
        50,
        100,
        500,
        None,
    ]


def test_next_day_is_utc_midnight() -> None:
    assert next_day(T0) == datetime(2026, 11, 25, tzinfo=UTC)
    late = datetime(2026, 11, 24, 23, 30, tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
    assert next_day(late) == datetime(2026, 11, 25, tzinfo=UTC)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        DomainLimits(max_connections=0)
    with pytest.raises(ValueError, match="negative"):
        Throttle(ThrottleConfig(warmup_schedule=(10, -1)), MemoryLedger())
    with pytest.raises(ValueError, match="ledger"):
        Throttle(ThrottleConfig(warmup_start=date(2026, 1, 1)))


def test_throttle_waits_short_and_holds_back_long() -> None:
    now = [T0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    config = ThrottleConfig(default=DomainLimits(per_minute=60, burst=1), domains={}, max_wait=1.5)
    throttle = Throttle(config, clock=lambda: now[0], sleep=sleep)

    async def go() -> list[object]:
        return [await throttle.admit("example.org") for _ in range(3)]

    first, second, third = asyncio.run(go())
    assert first is None
    assert second is None
    assert slept == [1.0]  # the second waited its turn
    assert third is not None
    assert third.reason == "domain_throttled"  # type: ignore[attr-defined]
    assert third.retry_at == T0 + timedelta(seconds=2)  # type: ignore[attr-defined]
    # Another domain has its own bucket.
    assert asyncio.run(throttle.admit("other.org")) is None


def test_throttle_known_domains_and_connections() -> None:
    config = ThrottleConfig()
    assert config.limits("gmail.com").max_connections == 10
    assert config.limits("clinic.example") == config.default
    throttle = Throttle(ThrottleConfig(default=DomainLimits(max_connections=2), domains={}))
    active = 0
    peak = 0

    async def one() -> None:
        nonlocal active, peak
        async with throttle.connection("example.org"):
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1

    async def go() -> None:
        await asyncio.gather(*(one() for _ in range(6)))

    asyncio.run(go())
    assert peak == 2


def test_warmup_shared_ledger_across_processes() -> None:
    """Two throttles (two worker processes) on one ledger share the day's cap."""
    ledger = MemoryLedger()
    now = [T0]
    config = ThrottleConfig(
        warmup_schedule=(5,), warmup_start=T0.date(), warmup_block=2, max_wait=0
    )
    a = Throttle(config, ledger, clock=lambda: now[0])
    b = Throttle(config, ledger, clock=lambda: now[0])

    async def go() -> list[str]:
        out = []
        for i in range(8):
            held = await (a if i % 2 else b).admit(f"d{i}.example")
            out.append("ok" if held is None else held.reason)
        return out

    results = asyncio.run(go())
    assert results.count("ok") == 5
    assert set(results) == {"ok", "warmup_cap"}
    assert ledger.used[("default", T0.date())] == 5
    now[0] = T0 + timedelta(days=1)  # past the schedule: no cap
    assert asyncio.run(a.admit("late.example")) is None


def test_held_back_does_not_spend_the_retry_budget() -> None:
    policy = machine.RetryPolicy(max_attempts=3)
    retry_at = T0 + timedelta(hours=5)
    for reason in ("warmup_cap", "domain_throttled"):
        assert reason in REASONS
        nxt = machine.after_attempt(
            held_back(reason, retry_at),  # type: ignore[arg-type]
            attempts=10,
            unknown_retries=0,
            at=T0,
            policy=policy,
            rng=Random(1),
        )
        assert (nxt.state, nxt.next_attempt_at, nxt.held_back) == ("deferred", retry_at, True)
    # Ten attempts of which eight were held back: two real ones, budget of three left one.
    nxt = machine.after_attempt(
        mx_tls_failed(), attempts=10, unknown_retries=0, at=T0, policy=policy,
        rng=Random(1), held_back=8,
    )  # fmt: skip
    assert nxt.state == "deferred"
    nxt = machine.after_attempt(
        mx_tls_failed(), attempts=10, unknown_retries=0, at=T0, policy=policy,
        rng=Random(1), held_back=7,
    )  # fmt: skip
    assert (nxt.state, nxt.reason) == ("failed", "retries_exhausted")
    with pytest.raises(ValueError, match="aware"):
        held_back("warmup_cap", datetime(2026, 1, 1))


def test_mail_hosts_and_recipient_domain() -> None:
    assert mail_hosts("example.org", []) == ["example.org"]
    assert mail_hosts(
        "example.org", [MxHost(20, "b.example.org"), MxHost(10, "a.example.org")]
    ) == ["a.example.org", "b.example.org"]
    null = mail_hosts("example.org", [MxHost(0, "")])
    assert not isinstance(null, list)
    assert (null.status, null.reason) == ("failed", "null_mx")
    assert mail_hosts("example.org", [MxHost(0, ""), MxHost(10, "mx.example.org")]) == [
        "mx.example.org"
    ]
    assert recipient_domain("Pat@Example.ORG.") == "example.org"
    assert recipient_domain("no-at-sign") is None
    assert recipient_domain("@example.org") is None
    assert recipient_domain("pat@") is None
