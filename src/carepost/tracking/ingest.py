"""Durable, batched ingestion of opens and clicks (the tracking endpoints' back half).

A request handler verifies its token (an HMAC, in the event loop), builds a `RawEvent`
and awaits `BatchWriter.submit`. The writer gathers events into a batch (group commit: up
to `max_events`, or until the first has waited `max_wait` seconds; while one batch is
being written, the next gathers) and hands each batch to `EventStore.write` on its own
thread. That one transaction reads the batch's outbox rows (one SELECT; the facts of sent
messages are kept in a bounded LRU), classifies every event against the recent clicks of
its message (tracking/window.py), inserts the rows, corrects earlier clicks a burst has
revealed, and commits. Only then are the handlers' futures resolved, so a response is
never sent for an event that is not stored: a process that dies after answering has lost
nothing ("acknowledge after the write"). If the write fails, every event of the batch gets
`unavailable` and the client a 503, which it may retry.

The raw client address lives only in memory, for the classifier: rows keep its network
(/24 or /48, web/client.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import quote

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from carepost.campaigns.models import Campaign
from carepost.db import bulk_update, transaction
from carepost.delivery.models import OutboxMessage
from carepost.tracking.classifier import Event, Knowledge, Verdict
from carepost.tracking.destinations import links_of
from carepost.tracking.models import EngagementEvent
from carepost.tracking.service import TrackedEvent, record_tracked
from carepost.tracking.window import BurstWindow, Seen
from carepost.web.client import UNKNOWN, network_of

log = logging.getLogger("carepost.tracking")

REASON_WIDTH = 64  # engagement_events.reason
# The request headers that say "this is a prefetch, not a person" (classifier._is_prefetch).
PURPOSE_HEADERS = frozenset({"sec-purpose", "purpose", "x-purpose", "x-moz"})


@dataclass(frozen=True, slots=True)
class RawEvent:
    """What a handler knows of one request, before any database work. `ip` is the raw
    client address: kept in memory for the classifier, never stored."""

    message_id: str
    kind: Literal["open", "click"]
    link_index: int  # -1 for an open
    method: str
    user_agent: str
    ip: str
    purpose: Mapping[str, str]  # only PURPOSE_HEADERS, lower-case names
    at: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the handler answers: `recorded` (with the click's Location, or a honeypot),
    `unknown` (no such message or link: 404, nothing stored) or `unavailable` (503)."""

    status: Literal["recorded", "unknown", "unavailable"]
    location: bytes | None = None
    honeypot: bool = False


UNKNOWN_EVENT = Outcome("unknown")
UNAVAILABLE = Outcome("unavailable")
RECORDED_OPEN = Outcome("recorded")
RECORDED_HONEYPOT = Outcome("recorded", honeypot=True)


@dataclass(frozen=True, slots=True)
class MessageFacts:
    contact_id: str
    campaign_id: str | None
    template_id: str | None
    # When the message left: the outbox row's last change (its `sent` transition for a
    # sent message, the attempt's start before that). Scanners act within seconds of it.
    delivered_at: datetime
    final: bool  # sent: these facts will not change, so they may be cached


def reason_text(reasons: Sequence[str]) -> str:
    """The reason codes, comma-separated, as many whole codes as fit the column (the
    classifier lists the strongest signals first)."""
    text = ""
    for reason in reasons:
        candidate = f"{text},{reason}" if text else reason
        if len(candidate) > REASON_WIDTH:
            break
        text = candidate
    return text


def location_header(url: str) -> bytes:
    """A stored destination as a Location value: anything outside printable ASCII
    (non-ASCII letters, spaces, control characters) percent-encoded, so a template's URL
    can never split a header."""
    return quote(url, safe="!#$%&'()*+,/:;=?@[]~-._").encode("ascii")


class EventStore:
    """The write half, run on the writer's thread (one batch at a time)."""

    def __init__(
        self,
        engine: Engine,
        knowledge: Knowledge,
        *,
        cache_size: int = 100_000,
        window: BurstWindow | None = None,
    ) -> None:
        self.engine = engine
        self.knowledge = knowledge
        self.cache_size = cache_size
        self.window = window or BurstWindow(knowledge)
        self._facts: OrderedDict[str, MessageFacts] = OrderedDict()
        self._locations: dict[str, bytes] = {}

    def write(self, batch: Sequence[RawEvent]) -> list[Outcome]:
        """Classify and store one batch in one transaction; the outcome of each event in
        order. Raises when the database refuses (nothing of the batch is stored)."""
        try:
            with transaction(self.engine) as session:
                outcomes, rows, relabels = self._judge(session, batch)
                record_tracked(session, rows)
                if relabels:
                    bulk_update(
                        session,
                        EngagementEvent.__table__,
                        ("verdict", "reason", "confidence"),
                        ("message_id", "kind", "link_index", "at"),
                        relabels,
                    )
        except BaseException:
            self.window.abandoned()
            raise
        self.window.committed()
        return outcomes

    def _judge(
        self, session: Session, batch: Sequence[RawEvent]
    ) -> tuple[list[Outcome], list[TrackedEvent], list[tuple[object, ...]]]:
        facts = self._facts_of(session, {raw.message_id for raw in batch})
        outcomes: list[Outcome] = []
        rows: list[TrackedEvent] = []
        relabels: list[tuple[object, ...]] = []
        for raw in batch:
            fact = facts.get(raw.message_id)
            if fact is None:
                outcomes.append(UNKNOWN_EVENT)
                continue
            message_links: int | None = None
            honeypot = False
            outcome = RECORDED_OPEN
            if raw.kind == "click":
                if fact.template_id is None:
                    outcomes.append(UNKNOWN_EVENT)  # not a campaign's: no links to go to
                    continue
                links = links_of(session, fact.template_id)
                if raw.link_index > len(links):
                    outcomes.append(UNKNOWN_EVENT)
                    continue
                message_links = len(links)
                if raw.link_index == len(links):  # compose's index for the hidden link
                    honeypot = True
                    outcome = RECORDED_HONEYPOT
                else:
                    outcome = Outcome("recorded", self._location(links[raw.link_index]))
            event = Event(
                kind=raw.kind,
                link_index=raw.link_index if raw.kind == "click" else None,
                method=raw.method,
                user_agent=raw.user_agent,
                ip=raw.ip,
                headers=raw.purpose,
                delivered_at=fact.delivered_at,
                at=raw.at,
                message_links=message_links,
                honeypot=honeypot,
            )
            verdict, changed = self.window.judge(raw.message_id, event, len(rows))
            rows.append(_row(raw, fact, event, verdict))
            for seen in changed:
                self._correct(seen, rows, relabels)
            outcomes.append(outcome)
        return outcomes, rows, relabels

    def _correct(
        self, seen: Seen, rows: list[TrackedEvent], relabels: list[tuple[object, ...]]
    ) -> None:
        v = seen.verdict
        reason = reason_text(v.reasons)
        if not seen.stored:
            old = rows[seen.row]
            rows[seen.row] = TrackedEvent(
                old.contact_id,
                old.message_id,
                old.campaign_id,
                old.kind,
                old.link_index,
                v.verdict,
                reason,
                v.confidence,
                old.network,
                old.at,
            )
            return
        key = (seen.message_id, "click", seen.event.link_index, seen.event.at)
        relabels.append((v.verdict, reason, v.confidence, *key))

    def _facts_of(self, session: Session, ids: set[str]) -> dict[str, MessageFacts]:
        found: dict[str, MessageFacts] = {}
        missing = []
        for mid in ids:
            fact = self._facts.get(mid)
            if fact is None:
                missing.append(mid)
            else:
                self._facts.move_to_end(mid)
                found[mid] = fact
        if not missing:
            return found
        query = (
            select(
                OutboxMessage.id,
                OutboxMessage.contact_id,
                OutboxMessage.campaign_id,
                OutboxMessage.state,
                OutboxMessage.updated_at,
                Campaign.template_id,
            )
            .outerjoin(Campaign, Campaign.id == OutboxMessage.campaign_id)
            .where(OutboxMessage.id.in_(missing))
        )
        for mid, contact_id, campaign_id, state, updated_at, template_id in session.execute(query):
            fact = MessageFacts(contact_id, campaign_id, template_id, updated_at, state == "sent")
            found[mid] = fact
            if fact.final:
                self._facts[mid] = fact
        while len(self._facts) > self.cache_size:
            self._facts.popitem(last=False)
        return found

    def _location(self, url: str) -> bytes:
        value = self._locations.get(url)
        if value is None:
            if len(self._locations) >= 10_000:
                self._locations.clear()
            value = self._locations[url] = location_header(url)
        return value


def _row(raw: RawEvent, fact: MessageFacts, event: Event, verdict: Verdict) -> TrackedEvent:
    network = network_of(raw.ip)
    return TrackedEvent(
        contact_id=fact.contact_id,
        message_id=raw.message_id,
        campaign_id=fact.campaign_id,
        kind=raw.kind,
        link_index=event.link_index,
        verdict=verdict.verdict,
        reason=reason_text(verdict.reasons),
        confidence=verdict.confidence,
        network=None if network == UNKNOWN else network,
        at=raw.at,
    )


class BatchWriter:
    """Group commit for one event loop: `submit` returns once the event's batch has
    committed (or failed). One writer thread: batches commit in order, and SQLite has
    one writer anyway."""

    def __init__(self, store: EventStore, *, max_events: int = 500, max_wait: float = 0.002):
        self.store = store
        self.max_events = max_events
        self.max_wait = max_wait
        self._pending: list[tuple[RawEvent, asyncio.Future[Outcome]]] = []
        self._oldest = 0.0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self.batches = 0  # written so far (tests and benchmarks read it)

    async def submit(self, raw: RawEvent) -> Outcome:
        if self._closing:
            return UNAVAILABLE
        if self._task is None:
            self._start()
        assert self._wake is not None
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if not self._pending:
            self._oldest = time.monotonic()
        self._pending.append((raw, future))
        if len(self._pending) == 1 or len(self._pending) >= self.max_events:
            self._wake.set()
        return await future

    def _start(self) -> None:
        # Made on first use, inside the serving loop: a mounted app gets no lifespan.
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tracking-writer")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._oldest + self.max_wait - time.monotonic()
            if len(self._pending) < self.max_events and wait > 0 and not self._closing:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                if len(self._pending) < self.max_events and not self._waited():
                    continue  # woken early, but not full: wait out the rest
            batch = self._pending[: self.max_events]
            del self._pending[: self.max_events]
            if self._pending:
                self._oldest = time.monotonic()
            try:
                outcomes = await loop.run_in_executor(
                    self._executor, self.store.write, [raw for raw, _ in batch]
                )
            except Exception as exc:  # the database refused: 503, the client may retry
                # The class only: a driver's message can carry the statement's values.
                log.warning("tracking batch of %d not written: %s", len(batch), type(exc).__name__)
                outcomes = [UNAVAILABLE] * len(batch)
            self.batches += 1
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)

    def _waited(self) -> bool:
        return time.monotonic() >= self._oldest + self.max_wait

    async def close(self) -> None:
        """Write what was submitted, then stop; later submissions are answered 503.
        (Cancelling the loop instead could strand a batch the thread is still writing,
        with its handlers never answered.)"""
        self._closing = True
        if self._task is not None:
            assert self._wake is not None
            self._wake.set()
            await self._task
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
