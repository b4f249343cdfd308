"""Rate limits per API key (per user for staff sessions): a token bucket.

Each caller has a bucket of `burst` tokens refilled at `per_minute / 60` a second; a
request takes one or is refused with 429, `Retry-After` (whole seconds until a token is
back) and the `RateLimit-Limit/-Remaining/-Reset` headers (IETF draft). The buckets live
in the server process: each `carepost serve` process counts on its own, so N processes
allow up to N times the limit. That keeps a request free of a database write; a shared
limit would need a shared store, which the embedded default does not have.

`take` is the pure core (state and a time in, decision out); `Limiter` holds the buckets.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    tokens: float
    at: float  # seconds (any monotonic origin) when `tokens` was counted


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # whole seconds until a token is free (0 when allowed)
    reset: int  # whole seconds until the bucket is full again


def take(
    bucket: Bucket | None, now: float, *, per_minute: float, burst: int
) -> tuple[Bucket, Decision]:
    rate = per_minute / 60.0
    tokens = float(burst) if bucket is None else bucket.tokens
    if bucket is not None and now > bucket.at:
        tokens = min(float(burst), tokens + (now - bucket.at) * rate)
    if tokens >= 1.0:
        tokens -= 1.0
        reset = math.ceil((burst - tokens) / rate)
        return Bucket(tokens, now), Decision(True, burst, int(tokens), 0, reset)
    wait = max(1, math.ceil((1.0 - tokens) / rate))
    reset = math.ceil((burst - tokens) / rate)
    return Bucket(tokens, now), Decision(False, burst, 0, wait, reset)


class Limiter:
    """The buckets of one process, for at most `capacity` callers (least recently used
    dropped first: a dropped caller starts again with a full bucket)."""

    def __init__(self, per_minute: float, burst: int, capacity: int = 100_000) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self.capacity = capacity
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._lock = threading.Lock()  # sync routes run in a thread pool

    def hit(self, caller: str, now: float) -> Decision:
        with self._lock:
            bucket, decision = take(
                self._buckets.get(caller), now, per_minute=self.per_minute, burst=self.burst
            )
            self._buckets[caller] = bucket
            self._buckets.move_to_end(caller)
            while len(self._buckets) > self.capacity:
                self._buckets.popitem(last=False)
        return decision


def headers(decision: Decision) -> dict[str, str]:
    out = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset),
    }
    if not decision.allowed:
        out["Retry-After"] = str(decision.retry_after)
    return out
