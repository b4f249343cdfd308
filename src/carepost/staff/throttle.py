"""Login throttling: the policy, as pure functions of failure counts and times.

Each attempt is checked against several counters (scopes); each counter is reset by a
quiet period (its window) after its last failure:

* per client network (/24 or /48), any account: 20 free failures, then each attempt waits
  2^(n-20) s after the last failure, at most 15 min; window 1 h;
* per account and client network: 5 free, then 2^(n-5) × 2 s, at most 15 min; window 1 h;
* per account, for clients without a device cookie of that account: 5 free, then
  2^(n-5) s, at most 60 s; window 15 min;
* per device cookie (a browser that signed in to that account before), instead of the
  previous one: 5 free, then 2^(n-5) × 2 s, at most 15 min; window 1 h.

Why no lock-out, and why device cookies (OWASP's "slow down online guessing attacks with
device cookies"): a hard lock after N failures lets anyone lock any staff member out by
typing their address N times, and even an account-wide delay can be held shut by an
attacker who retries the moment it ends. So the account-wide counter applies only to
browsers the account has never signed in from. The person's own browser carries a
signed device cookie and is judged by its own counter, which an attacker elsewhere
cannot touch; an attacker's networks are slowed to one guess per 15 minutes. An attempt
refused by the throttle is refused before the password is checked (no oracle, no cost)
and changes no counter, so retrying early does not push the wait further out. Counters
are keyed by an HMAC of the address typed, whether or not an account has it, so the
throttle says nothing about which addresses exist. A successful login clears the
account's counters (not the network's). A wrong second factor counts as a failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Rule:
    free: int  # failures allowed before any delay
    base: timedelta  # the first delay; doubles with each further failure
    cap: timedelta
    window: timedelta  # a counter whose last failure is older than this starts again


NETWORK = Rule(20, timedelta(seconds=1), timedelta(minutes=15), timedelta(hours=1))
ACCOUNT_NETWORK = Rule(5, timedelta(seconds=2), timedelta(minutes=15), timedelta(hours=1))
ACCOUNT = Rule(5, timedelta(seconds=1), timedelta(seconds=60), timedelta(minutes=15))
DEVICE = Rule(5, timedelta(seconds=2), timedelta(minutes=15), timedelta(hours=1))


def scopes(account_key: str, network: str, device: str | None) -> list[tuple[str, Rule]]:
    """The counters an attempt is judged by: (storage key, rule). `account_key` is the
    HMAC of the address typed; `device` the id of a valid device cookie for it."""
    out = [(f"n:{network}", NETWORK), (f"an:{account_key}|{network}", ACCOUNT_NETWORK)]
    out.append((f"d:{device}", DEVICE) if device else (f"a:{account_key}", ACCOUNT))
    return out


@dataclass(frozen=True)
class Counter:
    failures: int
    last_failure_at: datetime


def live_failures(rule: Rule, counter: Counter | None, at: datetime) -> int:
    """The failures that still count at `at` (0 once the window has passed)."""
    if counter is None or at - counter.last_failure_at >= rule.window:
        return 0
    return counter.failures


def delay(rule: Rule, failures: int) -> timedelta:
    """How long after the last failure the next attempt must wait."""
    if failures < rule.free:
        return timedelta(0)
    exponent = min(failures - rule.free, 30)
    return min(rule.base * (1 << exponent), rule.cap)


def wait_for(rule: Rule, counter: Counter | None, at: datetime) -> timedelta:
    """Zero if an attempt at `at` may go ahead, else how long is left."""
    failures = live_failures(rule, counter, at)
    if counter is None or failures == 0:
        return timedelta(0)
    ready = counter.last_failure_at + delay(rule, failures)
    return max(ready - at, timedelta(0))


def after_failure(rule: Rule, counter: Counter | None, at: datetime) -> Counter:
    """The counter once a failure at `at` is recorded."""
    return Counter(live_failures(rule, counter, at) + 1, at)


def decide(checks: Iterable[tuple[Rule, Counter | None]], at: datetime) -> timedelta:
    """How long the attempt must wait (zero: go ahead): the longest of the scopes'."""
    longest = timedelta(0)
    for rule, counter in checks:
        longest = max(longest, wait_for(rule, counter, at))
    return longest
