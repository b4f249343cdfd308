"""The MTA-STS `PolicySource` direct delivery asks: TXT check, fetch, cache (RFC 8461 5.1).

For each recipient domain:

1. Look up `_mta-sts.<domain>`. No STSv1 record, an invalid one, or a DNS failure: use the
   cached policy if it has not expired, else there is no policy. (A missing record does not
   cancel a cached policy: stripping the record is exactly the downgrade MTA-STS resists;
   a domain that retires its policy publishes `mode: none` under a new id.)
2. The record's id equals the cached policy's and the cached copy is fresh: use it.
3. Otherwise fetch (a changed id, an expired copy, nothing cached, or a copy older than
   `refresh_after`, so a busy domain's policy never lapses at max_age). A valid new policy
   replaces the cached one; a failed fetch or an invalid file keeps an unexpired cached
   policy in force, else there is no policy.

The answer is memoised in the process for `recheck_after` seconds so a campaign to one
domain costs one TXT lookup per interval, not one per message, and one lock per domain
makes concurrent senders wait for a single fetch.

The cache itself is `PolicyCache`: `DatabasePolicyCache` (table mta_sts_policies) for
workers, so every worker shares what one fetched and a restart does not forget a policy;
`MemoryPolicyCache` for one-off use (`doctor dns`) and tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from carepost.clock import Clock, system_clock
from carepost.db import transaction
from carepost.delivery.models import MtaStsPolicyCache
from carepost.delivery.mta_sts import (
    MODES,
    Mode,
    PolicyError,
    StsPolicy,
    StsRecordError,
    parse_policy,
    parse_txt_records,
    txt_name,
)
from carepost.delivery.mta_sts_fetch import FetchError, PolicyFetcher
from carepost.delivery.resolver import DnsError, Resolver

DAY = 86_400


@dataclass(frozen=True)
class CachedPolicy:
    policy: StsPolicy
    fetched_at: datetime

    @property
    def expires_at(self) -> datetime:
        return self.fetched_at + timedelta(seconds=self.policy.max_age)

    def fresh(self, at: datetime) -> bool:
        return at < self.expires_at


class PolicyCache(Protocol):
    def get(self, domain: str) -> CachedPolicy | None: ...

    def put(self, domain: str, cached: CachedPolicy) -> None: ...


@dataclass
class MemoryPolicyCache:
    entries: dict[str, CachedPolicy] = field(default_factory=dict)

    def get(self, domain: str) -> CachedPolicy | None:
        return self.entries.get(domain)

    def put(self, domain: str, cached: CachedPolicy) -> None:
        self.entries[domain] = cached


class DatabasePolicyCache:
    """One row per domain. Each call is its own short transaction: a cached public policy
    is not a change anyone made, so it has no audit entry and no caller's unit of work to
    join. Two workers that fetch at once both upsert; the later write wins, and both wrote
    a valid policy."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, domain: str) -> CachedPolicy | None:
        with transaction(self._engine) as s:
            row = s.get(MtaStsPolicyCache, domain)
            if row is None:
                return None
            try:
                policy = StsPolicy(
                    mode=_mode(row.mode),
                    mx=tuple(p for p in row.mx.split("\n") if p),
                    max_age=row.max_age,
                    policy_id=row.policy_id,
                )
            except ValueError:
                return None  # a row this code did not write: refetch
            return CachedPolicy(policy, row.fetched_at)

    def put(self, domain: str, cached: CachedPolicy) -> None:
        p = cached.policy
        values = {
            "domain": domain,
            "policy_id": p.policy_id,
            "mode": p.mode,
            "mx": "\n".join(p.mx),
            "max_age": p.max_age,
            "fetched_at": cached.fetched_at,
            "expires_at": cached.expires_at,
        }
        with transaction(self._engine) as s:
            dialect = s.connection().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            stmt = insert(MtaStsPolicyCache).values(**values)
            s.execute(
                stmt.on_conflict_do_update(
                    index_elements=[MtaStsPolicyCache.domain],
                    set_={k: v for k, v in values.items() if k != "domain"},
                )
            )

    def domains(self) -> list[str]:
        with transaction(self._engine) as s:
            return list(s.scalars(select(MtaStsPolicyCache.domain)))


def _mode(value: str) -> Mode:
    for mode in MODES:
        if value == mode:
            return mode
    raise ValueError("unknown mode")


@dataclass
class _Memo:
    checked_at: datetime
    result: StsPolicy | None
    expires_at: datetime | None  # of the cached policy behind `result`


class MtaStsPolicies:
    """`PolicySource` for direct delivery. Never raises for a domain's misconfiguration
    or a network failure: those mean "use what is cached, else no policy"."""

    def __init__(
        self,
        resolver: Resolver,
        fetcher: PolicyFetcher,
        clock: Clock = system_clock,
        *,
        cache: PolicyCache | None = None,
        recheck_after: float = 300.0,
        refresh_after: float = DAY,
    ) -> None:
        self._resolver = resolver
        self._fetcher = fetcher
        self._clock = clock
        self._cache: PolicyCache = cache if cache is not None else MemoryPolicyCache()
        self._recheck = timedelta(seconds=recheck_after)
        self._refresh_after = refresh_after
        self._memo: dict[str, _Memo] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def policy(self, domain: str) -> StsPolicy | None:
        domain = domain.rstrip(".").lower()
        memo = self._memo_for(domain, self._clock())
        if memo is not None:
            return memo.result
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:
            now = self._clock()
            memo = self._memo_for(domain, now)  # another task may have just done it
            if memo is not None:
                return memo.result
            cached = self._cache.get(domain)
            if cached is not None and not cached.fresh(now):
                cached = None
            result, memoise = await self._decide(domain, cached, now)
            if memoise:
                self._memo[domain] = _Memo(
                    now, result.policy if result else None, result.expires_at if result else None
                )
            return result.policy if result else None

    def _memo_for(self, domain: str, now: datetime) -> _Memo | None:
        memo = self._memo.get(domain)
        if memo is None or now - memo.checked_at >= self._recheck:
            return None
        if memo.expires_at is not None and now >= memo.expires_at:
            return None
        return memo

    async def _decide(
        self, domain: str, cached: CachedPolicy | None, now: datetime
    ) -> tuple[CachedPolicy | None, bool]:
        """The policy in force and whether the answer may be memoised (not after a DNS
        failure: that is retried at the next message)."""
        try:
            record = parse_txt_records(await self._resolver.txt(txt_name(domain)))
        except DnsError:
            return cached, False
        except StsRecordError:
            return cached, True
        if record is None:
            return cached, True
        if (
            cached is not None
            and cached.policy.policy_id == record.policy_id
            and (now - cached.fetched_at).total_seconds() < self._refresh_age(cached)
        ):
            return cached, True
        try:
            text = await self._fetcher.fetch(domain)
            policy = parse_policy(text, policy_id=record.policy_id)
        except (FetchError, PolicyError):
            return cached, True
        fetched = CachedPolicy(policy, now)
        self._cache.put(domain, fetched)
        return fetched, True

    def _refresh_age(self, cached: CachedPolicy) -> float:
        return min(self._refresh_after, cached.policy.max_age / 2)
