"""Outbox use cases: enqueue, claim with leases, and batch state changes.

Claims follow DESIGN rule 6. On PostgreSQL due rows are selected `FOR UPDATE SKIP
LOCKED`, so any number of workers claim disjoint batches; on SQLite every write
transaction holds the database's one write lock (`BEGIN IMMEDIATE`), which serialises
claims. A claimed row carries a lease; a row whose lease has run out is taken back at the
next claim (machine.after_lease_expired). Every state change is written per batch with
executemany, never one round trip per recipient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, bindparam, or_, select, text, update
from sqlalchemy.orm import Session

from carepost.campaigns.models import Campaign
from carepost.contacts.store import new_id
from carepost.db import among, bulk_insert, driver_value
from carepost.delivery import machine
from carepost.delivery.models import OutboxMessage, OutboxTransition

LEASE_EXPIRED = "lease_expired"
LANE_ONE_OFF = 0
LANE_CAMPAIGN = 1
ENQUEUE_CHUNK = 5000


@dataclass(frozen=True)
class Claimed:
    id: str
    campaign_id: str | None
    contact_id: str
    previous_state: str
    attempts: int
    unknown_retries: int
    last_reason: str | None = None
    held_back: int = 0
    lane: int = LANE_CAMPAIGN
    # The seq of this claim's `claimed` transition: the attempt row records it, which
    # places the attempt's own timeline (started, result) after it (delivery.timeline).
    claim_seq: int | None = None

    @property
    def spends_unknown_retry(self) -> bool:
        """Only an unknown a live worker observed (the line died after DATA) uses up the
        retry budget; one left by a dead worker's lease does not, or two crashes on the
        same message would strand it. Duplicates stay bounded per crash instead."""
        return self.previous_state == "unknown" and self.last_reason != LEASE_EXPIRED


def enqueue(
    session: Session,
    *,
    campaign_id: str | None,
    contact_ids: Iterable[str],
    lane: int,
    at: datetime,
    progress: Callable[[int], None] | None = None,
) -> int:
    """One queued row per contact, written in chunks (keyset order of the ids given);
    `progress` gets the number of rows of each chunk once it is written."""
    table = OutboxMessage.__table__
    columns = (
        "id", "campaign_id", "contact_id", "lane", "state", "attempts", "unknown_retries",
        "next_attempt_at", "created_at", "updated_at",
    )  # fmt: skip
    at_value = driver_value(session, table.c.created_at, at)
    total = 0
    chunk: list[tuple[object, ...]] = []
    transitions: list[tuple[object, ...]] = []
    for contact_id in contact_ids:
        row_id = new_id()
        chunk.append(
            (row_id, campaign_id, contact_id, lane, "queued", 0, 0, at_value, at_value, at_value)
        )
        transitions.append((row_id, 0, "queued", at_value, None))
        if len(chunk) >= ENQUEUE_CHUNK:
            total += _flush(session, columns, chunk, transitions, progress)
    total += _flush(session, columns, chunk, transitions, progress)
    if total >= ANALYZE_AFTER and session.get_bind().dialect.name == "sqlite":
        session.execute(text(f"PRAGMA analysis_limit = {ANALYSIS_LIMIT}"))
        session.execute(text("ANALYZE outbox"))
    return total


def enqueue_one(
    session: Session, *, campaign_id: str, contact_id: str, lane: int, at: datetime
) -> str:
    """One queued row (a one-off message); its id, which is the message's identity."""
    row_id = new_id()
    columns = (
        "id", "campaign_id", "contact_id", "lane", "state", "attempts", "unknown_retries",
        "next_attempt_at", "created_at", "updated_at",
    )  # fmt: skip
    v = driver_value(session, OutboxMessage.__table__.c.created_at, at)
    rows: list[tuple[object, ...]] = [
        (row_id, campaign_id, contact_id, lane, "queued", 0, 0, v, v, v)
    ]
    _flush(session, columns, rows, [(row_id, 0, "queued", v, None)], None)
    return row_id


def lane_due(session: Session | Connection, *, lane: int, at: datetime) -> bool:
    """Whether a row of `lane` is waiting: an indexed probe (ix_outbox_due) cheap enough
    to run between batches and every few tenths of a second while idle."""
    from sqlalchemy import exists

    return bool(
        session.scalar(
            select(
                exists().where(
                    OutboxMessage.state.in_(machine.DUE_STATES),
                    OutboxMessage.lane == lane,
                    OutboxMessage.next_attempt_at <= at,
                )
            )
        )
    )


def _flush(
    session: Session,
    columns: Sequence[str],
    rows: list[tuple[object, ...]],
    transitions: list[tuple[object, ...]],
    progress: Callable[[int], None] | None,
) -> int:
    n = len(rows)
    bulk_insert(session, OutboxMessage.__table__, columns, rows)
    bulk_insert(
        session,
        OutboxTransition.__table__,
        ("outbox_id", "seq", "state", "at", "detail"),
        transitions,
    )
    rows.clear()
    transitions.clear()
    if progress is not None and n:
        progress(n)
    return n


# Enqueued at once, this many rows change the outbox's shape enough that SQLite must hear
# of it before the first claim: with no statistics (or old ones, from before the rows),
# it plans the claim on ix_outbox_due and sorts the whole queue for every batch. SQLite
# has no other way to be told; PostgreSQL is told per claim (_ordered_by_index).
ANALYZE_AFTER = 1000
# Rows an SQLite ANALYZE reads per index: enough to see the shape, cheap on a big outbox.
ANALYSIS_LIMIT = 1000


@contextmanager
def _ordered_by_index(session: Session) -> Iterator[None]:
    """PostgreSQL: plan the claim's SELECT with sorting priced out, so that it reads its
    batch off the front of ix_outbox_ready whatever the statistics say. They are often
    wrong for a claim: a campaign that just started has rows autovacuum has not counted
    yet, and the join to `campaigns` (running, not rate-limited) is estimated to keep a
    handful of rows. Planned for a handful, reading and sorting every due row looks
    cheaper than an ordered index scan, and a claim then costs the whole queue. Only
    this statement: the setting goes back before the claim writes anything. (Not in a
    `finally`: after an error the transaction is aborted and rolls the setting back
    itself, and a SET there would only hide the error.)"""
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    session.execute(text("SET LOCAL enable_sort = off"))
    yield
    session.execute(text("SET LOCAL enable_sort = on"))


def _lock(session: Session, stmt):  # type: ignore[no-untyped-def]
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=True, of=OutboxMessage)
    return stmt


def _next_seq(session: Session, ids: Sequence[str]) -> dict[str, int]:
    from sqlalchemy import func

    seqs: dict[str, int] = {}
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        for oid, seq in session.execute(
            select(OutboxTransition.outbox_id, func.max(OutboxTransition.seq))
            .where(among(session, OutboxTransition.outbox_id, chunk))
            .group_by(OutboxTransition.outbox_id)
        ):
            seqs[oid] = seq + 1
    return seqs


def transition(
    session: Session,
    changes: Sequence[tuple[str, str, str | None]],
    at: datetime,
) -> dict[str, int]:
    """Record (outbox id, new state, detail) for each row, in one executemany; returns
    each row's new seq. (A sending attempt's start and result are not recorded here: the
    attempt row holds them, see delivery.timeline.)"""
    if not changes:
        return {}
    found = _next_seq(session, [c[0] for c in changes])
    seqs = {oid: found.get(oid, 0) for oid, _, _ in changes}
    at_value = driver_value(session, OutboxTransition.__table__.c.at, at)
    bulk_insert(
        session,
        OutboxTransition.__table__,
        ("outbox_id", "seq", "state", "at", "detail"),
        [(oid, seqs[oid], state, at_value, detail) for oid, state, detail in changes],
    )
    return seqs


def expire_leases(session: Session, *, at: datetime, limit: int = 1000) -> int:
    """Take back rows whose worker let the lease run out (it died, most likely)."""
    rows = session.execute(
        _lock(
            session,
            select(OutboxMessage.id, OutboxMessage.state)
            .where(
                OutboxMessage.state.in_(("claimed", "attempt_started")),
                OutboxMessage.lease_until < at,
            )
            .limit(limit),
        )
    ).all()
    if not rows:
        return 0
    changes = []
    params = []
    for oid, state in rows:
        new_state = machine.after_lease_expired(state)
        changes.append((oid, new_state, LEASE_EXPIRED))
        params.append(
            {
                "id": oid,
                "state": new_state,
                "lease_owner": None,
                "lease_until": None,
                "next_attempt_at": at,
                "last_reason": LEASE_EXPIRED,
                "updated_at": at,
            }
        )
    session.execute(update(OutboxMessage), params)
    transition(session, changes, at)
    return len(rows)


def claim(
    session: Session,
    *,
    worker: str,
    at: datetime,
    limit: int,
    lease: timedelta,
    policy: machine.RetryPolicy,
    lane: int | None = None,
) -> list[Claimed]:
    """Lease up to `limit` due rows of running campaigns (and one-off messages), one-off
    lane first, oldest due first; with `lane`, rows of that lane only."""
    expire_leases(session, at=at)
    columns = (
        OutboxMessage.id,
        OutboxMessage.campaign_id,
        OutboxMessage.contact_id,
        OutboxMessage.state,
        OutboxMessage.attempts,
        OutboxMessage.unknown_retries,
        OutboxMessage.last_reason,
        OutboxMessage.held_back,
        OutboxMessage.lane,
    )
    is_due = _is_due(at, policy)
    order = (OutboxMessage.lane, OutboxMessage.next_attempt_at, OutboxMessage.id)
    due = (
        select(*columns)
        .outerjoin(Campaign, Campaign.id == OutboxMessage.campaign_id)
        .where(
            *is_due,
            or_(
                OutboxMessage.campaign_id.is_(None),
                (Campaign.status == "running") & Campaign.rate_per_minute.is_(None),
            ),
        )
        .order_by(*order)
        .limit(limit)
    )
    if lane is not None:
        due = due.where(OutboxMessage.lane == lane)
    with _ordered_by_index(session):
        rows = list(session.execute(_lock(session, due)).all())
    if rows and rows[0].lane == LANE_ONE_OFF:
        # A batch with one-off messages carries nothing else: they go out after their
        # own short prepare and send, not behind hundreds of campaign messages composed
        # in the same batch (the campaign's rows are claimed by the next batch).
        rows = [r for r in rows if r.lane == LANE_ONE_OFF]
        return _lease(session, rows, worker=worker, at=at, lease=lease)
    if lane is not None:
        return _lease(session, rows, worker=worker, at=at, lease=lease)
    # Rate-limited campaigns: each gets what its last minute of claims leaves over.
    for campaign_id, allowance in _allowances(session, at).items():
        room = min(allowance, limit - len(rows))
        if room <= 0:
            continue
        # Not pinned to ix_outbox_ready: one campaign's rows may lie far behind other
        # campaigns' in that index's order, and the planner may rather read them by
        # ix_outbox_campaign_id and sort that campaign's rows alone.
        rows += session.execute(
            _lock(
                session,
                select(*columns)
                .where(*is_due, OutboxMessage.campaign_id == campaign_id)
                .order_by(*order)
                .limit(room),
            )
        ).all()
    return _lease(session, rows, worker=worker, at=at, lease=lease)


def _lease(
    session: Session, rows: Sequence[Any], *, worker: str, at: datetime, lease: timedelta
) -> list[Claimed]:
    if not rows:
        return []
    until = at + lease
    # One statement for the batch: every row takes the same values.
    session.execute(
        update(OutboxMessage)
        .where(among(session, OutboxMessage.id, [r.id for r in rows]))
        .values(state="claimed", lease_owner=worker, lease_until=until, updated_at=at)
    )
    seqs = transition(session, [(r.id, "claimed", worker[:64]) for r in rows], at)
    return [
        Claimed(
            r.id,
            r.campaign_id,
            r.contact_id,
            r.state,
            r.attempts,
            r.unknown_retries,
            r.last_reason,
            r.held_back,
            r.lane,
            seqs[r.id],
        )
        for r in rows
    ]


def _is_due(at: datetime, policy: machine.RetryPolicy) -> tuple[ColumnElement[bool], ...]:
    return (
        # Literals, not parameters: this is the predicate of the partial index
        # `ix_outbox_ready` (models.READY), which a planner can only match against
        # values it sees when it plans.
        OutboxMessage.state.in_(
            bindparam("due_states", machine.DUE_STATES, expanding=True, literal_execute=True)
        ),
        OutboxMessage.next_attempt_at <= at,
        or_(
            OutboxMessage.state != "unknown",
            OutboxMessage.unknown_retries < policy.unknown_retries,
            OutboxMessage.last_reason == LEASE_EXPIRED,
        ),
    )


def count_due(session: Session, *, at: datetime, policy: machine.RetryPolicy) -> int:
    """Rows a claim at `at` could take: one-off messages and those of running campaigns
    (rate-limited ones included, though they come out at their rate). Rows whose lease
    ran out are not counted: the next claim first takes them back."""
    from sqlalchemy import func

    query = (
        select(func.count())
        .select_from(OutboxMessage)
        .outerjoin(Campaign, Campaign.id == OutboxMessage.campaign_id)
        .where(
            *_is_due(at, policy),
            or_(OutboxMessage.campaign_id.is_(None), Campaign.status == "running"),
        )
    )
    return int(session.scalar(query) or 0)


def _allowances(session: Session, at: datetime) -> dict[str, int]:
    """Messages each running, rate-limited campaign may still claim this minute."""
    from sqlalchemy import func

    limited = session.execute(
        select(Campaign.id, Campaign.rate_per_minute).where(
            Campaign.status == "running", Campaign.rate_per_minute.is_not(None)
        )
    ).all()
    allowances: dict[str, int] = {}
    for campaign_id, rate in limited:
        recent = session.scalar(
            select(func.count())
            .select_from(OutboxTransition)
            .join(OutboxMessage, OutboxMessage.id == OutboxTransition.outbox_id)
            .where(
                OutboxMessage.campaign_id == campaign_id,
                OutboxTransition.state == "claimed",
                OutboxTransition.at > at - timedelta(minutes=1),
            )
        )
        allowances[campaign_id] = max(int(rate or 0) - int(recent or 0), 0)
    return allowances


def still_leased(session: Session, ids: Sequence[str], *, worker: str, at: datetime) -> set[str]:
    """Which of these rows this worker still holds: a worker that stalled past its lease
    must not hand a message that another worker may now own to a transport."""
    held: set[str] = set()
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        query = select(OutboxMessage.id).where(
            and_(
                among(session, OutboxMessage.id, chunk),
                OutboxMessage.state == "claimed",
                OutboxMessage.lease_owner == worker,
                OutboxMessage.lease_until >= at,
            )
        )
        if session.get_bind().dialect.name == "postgresql":
            # Wait for locks here, never skip: another worker's claim may hold one of our
            # rows for a moment (PostgreSQL keeps the lock on a row its SKIP LOCKED scan
            # locked and then found no longer due), and skipping it left the row
            # `claimed` by us, unsent until the lease ran out.
            query = query.with_for_update(of=OutboxMessage)
        held.update(session.execute(query).scalars())
    return held
