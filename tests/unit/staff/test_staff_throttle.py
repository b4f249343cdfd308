"""The login throttle's policy (staff/throttle.py), as pure functions of counts and times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from carepost.staff import throttle
from carepost.staff.throttle import ACCOUNT, ACCOUNT_NETWORK, DEVICE, NETWORK, Counter

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def _fail(rule: throttle.Rule, n: int, at: datetime = T0) -> Counter | None:
    counter = None
    for _ in range(n):
        counter = throttle.after_failure(rule, counter, at)
    return counter


def test_free_failures_then_doubling_delays_up_to_the_cap() -> None:
    assert throttle.wait_for(ACCOUNT, _fail(ACCOUNT, 4), T0) == timedelta(0)
    waits = [throttle.wait_for(ACCOUNT, _fail(ACCOUNT, n), T0) for n in range(5, 14)]
    assert [w.total_seconds() for w in waits] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_the_wait_runs_from_the_last_failure() -> None:
    counter = _fail(ACCOUNT_NETWORK, 7)  # 2 s × 2^2 = 8 s
    assert throttle.wait_for(ACCOUNT_NETWORK, counter, T0 + timedelta(seconds=3)) == timedelta(
        seconds=5
    )
    assert throttle.wait_for(ACCOUNT_NETWORK, counter, T0 + timedelta(seconds=8)) == timedelta(0)


def test_a_quiet_window_starts_the_count_again() -> None:
    counter = _fail(NETWORK, 40)
    later = T0 + NETWORK.window
    assert throttle.live_failures(NETWORK, counter, later) == 0
    assert throttle.after_failure(NETWORK, counter, later).failures == 1


def test_scopes_use_the_device_instead_of_the_account_when_the_browser_has_one() -> None:
    plain = dict(throttle.scopes("acct", "203.0.113.0/24", None))
    device = dict(throttle.scopes("acct", "203.0.113.0/24", "d1"))
    assert plain == {
        "n:203.0.113.0/24": NETWORK,
        "an:acct|203.0.113.0/24": ACCOUNT_NETWORK,
        "a:acct": ACCOUNT,
    }
    assert device == {
        "n:203.0.113.0/24": NETWORK,
        "an:acct|203.0.113.0/24": ACCOUNT_NETWORK,
        "d:d1": DEVICE,
    }


def test_decide_takes_the_longest_wait() -> None:
    checks = [(ACCOUNT, _fail(ACCOUNT, 6)), (NETWORK, _fail(NETWORK, 1)), (DEVICE, None)]
    assert throttle.decide(checks, T0) == timedelta(seconds=2)
    assert throttle.decide([], T0) == timedelta(0)


@given(st.integers(min_value=0, max_value=500), st.integers(min_value=0, max_value=7200))
def test_no_wait_is_ever_longer_than_the_cap(failures: int, seconds: int) -> None:
    """Without a hard lock-out, nobody waits longer than a rule's cap."""
    for rule in (ACCOUNT, ACCOUNT_NETWORK, NETWORK, DEVICE):
        counter = Counter(failures, T0) if failures else None
        wait = throttle.wait_for(rule, counter, T0 + timedelta(seconds=seconds))
        assert timedelta(0) <= wait <= rule.cap
