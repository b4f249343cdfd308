"""The outbox state machine: pure decisions about what happens to a message next.

    queued ──claim──► claimed ──gate, render, commit──► attempt_started ──► result
      ▲                  │ lease expires                    │ lease expires
      └──────────────────┘                                  ▼ (the worker died mid-send)
                                                         unknown

Results: `sent`; `failed` (5xx, or retries used up); `deferred` (4xx, timeouts, no TLS:
retried at next_attempt_at with exponential backoff and full jitter; or held back by
carepost's own warm-up cap or domain rate: retried when the limit says, without spending
the retry budget); `unknown` (the line died after the body was sent: retried ONCE with
the same Message-ID, then left for an operator, because a second copy is the price of
never losing one); `denied` (the consent gate said no at send time).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from random import Random

from carepost.delivery.outcome import Outcome

DUE_STATES = ("queued", "deferred", "unknown")
FINAL_STATES = ("sent", "failed", "denied")


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 60.0
    cap_seconds: float = 6 * 3600.0
    max_attempts: int = 8  # about a day of tries with the defaults
    unknown_retries: int = 1

    def backoff(self, attempts: int, rng: Random) -> timedelta:
        """Exponential in the number of attempts so far, with jitter in [half, full] so a
        relay that comes back is not hit by every deferred message in the same second."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** max(attempts - 1, 0))
        return timedelta(seconds=ceiling * rng.uniform(0.5, 1.0))


@dataclass(frozen=True)
class Next:
    state: str
    next_attempt_at: datetime | None
    reason: str
    count_unknown: bool = False
    # carepost's own limit held the message back (Outcome.retry_at): the worker gives
    # this try back to the retry budget (outbox.held_back).
    held_back: bool = False


def after_attempt(
    outcome: Outcome,
    *,
    attempts: int,
    unknown_retries: int,
    at: datetime,
    policy: RetryPolicy,
    rng: Random,
    held_back: int = 0,
) -> Next:
    """`attempts` counts this attempt and every earlier one, `held_back` how many of the
    earlier ones carepost's own limits stopped before any connection (warm-up caps, domain
    rates: they do not spend the retry budget); `unknown_retries` how many unknown
    retries were already spent before it."""
    if outcome.status == "sent":
        return Next("sent", None, outcome.reason)
    if outcome.status == "failed":
        return Next("failed", None, outcome.reason)
    if outcome.status == "unknown":
        if unknown_retries < policy.unknown_retries:
            return Next("unknown", at + policy.backoff(1, rng), outcome.reason, True)
        return Next("unknown", None, "unknown_final", True)
    if outcome.retry_at is not None:
        # Our own limit: the message was never offered, so the time is ours to choose
        # and the try does not count (a warm-up week must not fail a campaign).
        return Next("deferred", max(outcome.retry_at, at), outcome.reason, held_back=True)
    if attempts - held_back >= policy.max_attempts:
        return Next("failed", None, "retries_exhausted")
    return Next("deferred", at + policy.backoff(attempts, rng), outcome.reason)


def after_lease_expired(state: str) -> str:
    """A lease ran out: a claimed row never reached the relay and goes back to the queue;
    an attempt_started row may have, so it becomes unknown (and is retried once)."""
    if state == "claimed":
        return "queued"
    if state == "attempt_started":
        return "unknown"
    raise ValueError(f"no lease to expire in state {state}")
