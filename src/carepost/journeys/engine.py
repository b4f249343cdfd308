"""The durable journey engine: the step machine (machine.py) run over enrolments stored
in the database, one batch per tick.

A tick, in one transaction:
1. reads new human opens and clicks of journey messages (engagement_events by id, from a
   stored cursor) and wakes the enrolments waiting for them;
2. claims due enrolments (active, or waiting with wake_at <= now) of active journeys: on
   PostgreSQL `FOR UPDATE SKIP LOCKED`, so engines claim disjoint batches; on SQLite the
   transaction holds the one write lock (`BEGIN IMMEDIATE`), which serialises ticks;
3. runs the machine for each, then writes, per batch and with executemany: the new
   states, the transitions, the outbox rows of sends (through the send step's hidden
   campaign, so the worker gates and delivers them), static-list changes and the
   enrolments of `start_journey` steps.

Claim and effects commit together: a tick killed half-way leaves no trace, and the next
one does the same work again. A send's outbox id is derived from (enrolment, visit) and
written "insert if absent", so even a step re-run outside that transaction cannot queue a
second message.

Not carried out yet (the enrolment exits with `unsupported_step`, never a pretended
success): update_contact and webhook steps, and branch rules with predicates other than
the journey's own opened()/clicked() (attributes need the segment snapshot). Time-of-day
waits use UTC: contacts have no stored time zone yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import Engine, and_, delete, func, select, update
from sqlalchemy.orm import Session

from carepost.account import settings as account
from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.campaigns.models import Campaign
from carepost.clock import Clock, system_clock
from carepost.consent.records import MARKETING_CLASSES
from carepost.db import bulk_update, driver_value, insert_if_absent, transaction
from carepost.delivery.models import OutboxMessage, OutboxTransition
from carepost.delivery.outbox import LANE_ONE_OFF
from carepost.journeys import definition as D
from carepost.journeys import machine as M
from carepost.journeys import service
from carepost.journeys.models import (
    JourneyCursor,
    JourneyEnrolment,
    JourneyMessage,
    JourneySend,
    JourneyTransition,
    JourneyVersion,
)
from carepost.segments import ast as A
from carepost.segments.models import Segment, StaticMember
from carepost.segments.printer import print_rule
from carepost.tracking.models import EngagementEvent

ENGAGEMENT_CURSOR = "engagement_events"
ENGAGEMENT_BATCH = 5000
UNSUPPORTED = "unsupported_step"
ENGINE_ACTOR = Actor("system:journeys", "system", socket.gethostname()[:64])
TRANSITION_COLUMNS = ("enrolment_id", "seq", "step", "outcome", "detail", "at")
STATE_COLUMNS = (
    "status", "step", "visited", "visits", "wake_at", "waiting_for", "exit_reason",
    "exit_step", "sent", "seq", "updated_at",
)  # fmt: skip


def outbox_id(enrolment_id: str, visit: int) -> str:
    """The send's outbox id: the same (enrolment, visit) always names the same message."""
    return hashlib.sha256(f"journey|{enrolment_id}|{visit}".encode()).hexdigest()[:32]


class _Unsupported(Exception):
    pass


@dataclass
class TickReport:
    claimed: int = 0
    transitions: int = 0
    sends: int = 0
    woken_by_engagement: int = 0
    exits: Counter[str] = field(default_factory=Counter)

    def add(self, other: TickReport) -> None:
        self.claimed += other.claimed
        self.transitions += other.transitions
        self.sends += other.sends
        self.woken_by_engagement += other.woken_by_engagement
        self.exits.update(other.exits)


@dataclass
class _Row:
    id: str
    journey_id: str
    state: M.Enrolment
    seq: int


class JourneyEngine:
    def __init__(
        self,
        engine: Engine,
        clock: Clock = system_clock,
        *,
        batch: int = 1000,
        owner: str | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.batch = batch
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"[:64]
        self._journeys: dict[str, D.Journey] = {}
        self._names: dict[str, str] = {}
        self._sends: dict[str, dict[str, str]] = {}
        self._classes: dict[str, str] = {}  # campaign id -> message class

    # --- public --------------------------------------------------------------------
    def tick(self) -> TickReport:
        """One batch: engagement first, then up to `batch` due enrolments."""
        with transaction(self.engine) as session:
            now = self.clock()
            report = TickReport()
            report.woken_by_engagement = self._read_engagement(session, now)
            rows = self._claim(session, now)
            report.claimed = len(rows)
            if rows:
                self._advance(session, rows, now, report)
            return report

    def run_until_idle(self, max_ticks: int = 1_000_000) -> TickReport:
        """Tick until nothing is due at the clock's current time."""
        total = TickReport()
        for _ in range(max_ticks):
            report = self.tick()
            total.add(report)
            if report.claimed == 0 and report.woken_by_engagement == 0:
                break
        return total

    # --- definitions ---------------------------------------------------------------
    def journey(self, session: Session, journey_id: str) -> D.Journey:
        found = self._journeys.get(journey_id)
        if found is None:
            row = session.get(JourneyVersion, journey_id)
            assert row is not None  # enrolments reference their version
            found = service.definition_of(row)
            self._journeys[journey_id] = found
            self._names[journey_id] = row.name
            self._sends[journey_id] = {
                s.step: s.campaign_id
                for s in session.scalars(
                    select(JourneySend).where(JourneySend.journey_id == journey_id)
                )
            }
            for cid, cls in session.execute(
                select(Campaign.id, Campaign.message_class).where(
                    Campaign.id.in_(list(self._sends[journey_id].values()))
                )
            ):
                self._classes[cid] = cls
        return found

    # --- claim ---------------------------------------------------------------------
    def _claim(self, session: Session, now: datetime) -> list[_Row]:
        active = list(
            session.scalars(select(JourneyVersion.id).where(JourneyVersion.status == "active"))
        )
        if not active:
            return []
        t = JourneyEnrolment
        cols = (
            t.id, t.journey_id, t.contact_id, t.status, t.step, t.visited, t.visits,
            t.wake_at, t.waiting_for, t.sent, t.seq,
        )  # fmt: skip
        found: list[Any] = []
        for due, order in (
            (and_(t.status == "active"), t.updated_at),
            (and_(t.status == "waiting", t.wake_at <= now), t.wake_at),
        ):
            room = self.batch - len(found)
            if room <= 0:
                break
            query = select(*cols).where(due, t.journey_id.in_(active)).order_by(order).limit(room)
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=t)
            found.extend(session.execute(query).all())
        return [
            _Row(
                r.id,
                r.journey_id,
                M.Enrolment(
                    contact_id=r.contact_id,
                    step=r.step,
                    status=r.status,
                    visited=frozenset(json.loads(r.visited)),
                    visits=r.visits,
                    wake_at=r.wake_at,
                    waiting_for=r.waiting_for,
                    sent=tuple((s, v) for s, v in json.loads(r.sent)),
                ),
                r.seq,
            )
            for r in found
        ]

    # --- one batch -----------------------------------------------------------------
    def _advance(
        self, session: Session, rows: Sequence[_Row], now: datetime, report: TickReport
    ) -> None:
        for row in rows:
            self.journey(session, row.journey_id)
        engaged = self._engagement_of(session, rows)
        marketing = self._marketing_counts(session, [r.state.contact_id for r in rows], now)
        cap = account.get_int(session, account.MARKETING_PER_WEEK)
        states: list[tuple[Any, ...]] = []
        transitions: list[tuple[Any, ...]] = []
        sends: list[tuple[_Row, M.SendEffect]] = []
        segment_changes: list[tuple[str, bool, str]] = []
        starts: dict[str, list[str]] = defaultdict(list)
        at = at_value(session, now)

        def may_send(contact: str, message_class: str) -> bool:
            if message_class not in MARKETING_CLASSES:
                return True
            if marketing[contact] >= cap:
                return False
            # Counted now: a later send of the same run sees it.
            marketing[contact] += 1
            return True

        for row in rows:
            journey = self._journeys[row.journey_id]
            decider = _Decider(row.id, engaged)
            world = M.World(decide=decider.decide, zone=_utc, may_send=may_send)
            result = M.run(journey, row.state, now, world)
            result = _explain_branches(result, decider.decisions)
            if decider.problems:
                result = _cut_at_branch(result, decider.problems[0])
            result = _cut_unsupported(result)
            state = result.state
            exit_step = None
            if state.status == "exited":
                exit_step = result.transitions[-1].step if result.transitions else row.state.step
                report.exits[state.exit_reason or "completed"] += 1
            for effect in result.effects:
                if isinstance(effect, M.SendEffect):
                    sends.append((row, effect))
                elif isinstance(effect, M.SegmentEffect):
                    segment_changes.append((effect.segment, effect.add, state.contact_id))
                elif isinstance(effect, M.StartJourneyEffect):
                    starts[effect.journey].append(state.contact_id)
            seq = row.seq
            for t in result.transitions:
                transitions.append((row.id, seq, t.step, t.outcome, t.detail[:512], at))
                seq += 1
            report.transitions += len(result.transitions)
            states.append(
                (
                    state.status,
                    state.step,
                    json.dumps(sorted(state.visited)),
                    state.visits,
                    state.wake_at,
                    state.waiting_for,
                    state.exit_reason,
                    exit_step,
                    json.dumps([list(s) for s in state.sent]),
                    seq,
                    now,
                    row.id,
                )
            )
        self._write_sends(session, sends, now)
        report.sends += len(sends)
        bulk_update(session, JourneyEnrolment.__table__, STATE_COLUMNS, ("id",), states)
        insert_if_absent(session, JourneyTransition.__table__, TRANSITION_COLUMNS, transitions)
        self._apply_segments(session, segment_changes, now)
        for name, contacts in starts.items():
            service.enrol(session, name, contacts, now=now, source="journey")

    def _write_sends(
        self, session: Session, sends: Sequence[tuple[_Row, M.SendEffect]], now: datetime
    ) -> None:
        if not sends:
            return
        at = at_value(session, now)
        outbox_rows = []
        queued = []
        messages = []
        for row, effect in sends:
            oid = outbox_id(row.id, effect.visit)
            campaign = self._sends[row.journey_id][effect.step]
            outbox_rows.append(
                (oid, campaign, row.state.contact_id, LANE_ONE_OFF, "queued", 0, 0, at, at, at)
            )
            queued.append((oid, 0, "queued", at, None))
            messages.append((oid, row.id, row.journey_id, effect.step, effect.visit))
        insert_if_absent(
            session,
            OutboxMessage.__table__,
            (
                "id",
                "campaign_id",
                "contact_id",
                "lane",
                "state",
                "attempts",
                "unknown_retries",
                "next_attempt_at",
                "created_at",
                "updated_at",
            ),
            outbox_rows,
        )
        insert_if_absent(
            session,
            OutboxTransition.__table__,
            ("outbox_id", "seq", "state", "at", "detail"),
            queued,
        )
        insert_if_absent(
            session,
            JourneyMessage.__table__,
            ("outbox_id", "enrolment_id", "journey_id", "step", "visit"),
            messages,
        )

    def _apply_segments(
        self, session: Session, changes: Sequence[tuple[str, bool, str]], now: datetime
    ) -> None:
        if not changes:
            return
        by_list: dict[tuple[str, bool], list[str]] = defaultdict(list)
        for name, add, contact in changes:
            by_list[(name, add)].append(contact)
        at = at_value(session, now)
        for (name, add), contacts in by_list.items():
            seg = session.scalars(select(Segment).where(Segment.name == name)).first()
            if seg is None or seg.kind != "static":
                # Checked at publish; a list deleted since then is an operator's doing.
                continue
            if add:
                insert_if_absent(
                    session,
                    StaticMember.__table__,
                    ("segment_id", "contact_id", "added_at"),
                    [(seg.id, c, at) for c in dict.fromkeys(contacts)],
                )
            else:
                session.execute(
                    delete(StaticMember).where(
                        StaticMember.segment_id == seg.id, StaticMember.contact_id.in_(contacts)
                    )
                )
            audit.append(
                session,
                actor=ENGINE_ACTOR,
                action="journeys.list_members_added" if add else "journeys.list_members_removed",
                subjects=sorted(set(contacts)),
                details={"segment": seg.id, "name": name},
                clock=lambda: now,
            )

    # --- engagement ----------------------------------------------------------------
    def _engagement_of(
        self, session: Session, rows: Sequence[_Row]
    ) -> dict[str, dict[str, set[tuple[str, int | None]]]]:
        """enrolment id -> send step -> human (kind, link) of this enrolment's messages."""
        wanted = {outbox_id(r.id, v): (r.id, s) for r in rows for s, v in r.state.sent}
        out: dict[str, dict[str, set[tuple[str, int | None]]]] = defaultdict(
            lambda: defaultdict(set)
        )
        ids = list(wanted)
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            for message_id, kind, link in session.execute(
                select(
                    EngagementEvent.message_id, EngagementEvent.kind, EngagementEvent.link_index
                ).where(
                    EngagementEvent.message_id.in_(chunk),
                    EngagementEvent.verdict == "human",
                    EngagementEvent.kind.in_(("open", "click")),
                )
            ):
                enrolment, step = wanted[str(message_id)]
                out[enrolment][step].add((kind, link))
        return out

    def _read_engagement(self, session: Session, now: datetime) -> int:
        """Wake enrolments waiting for a human open or click of their own message. A click
        counts as an open too (a reader with images off clicks without an open pixel)."""
        if session.get(JourneyCursor, ENGAGEMENT_CURSOR) is None:
            # The first tick ever: events before it cannot concern journey messages (none
            # exist yet), so the cursor starts at the end instead of scanning history.
            start = session.scalar(select(func.max(EngagementEvent.id))) or 0
            insert_if_absent(
                session,
                JourneyCursor.__table__,
                ("name", "position"),
                [(ENGAGEMENT_CURSOR, int(start))],
            )
        query = select(JourneyCursor).where(JourneyCursor.name == ENGAGEMENT_CURSOR)
        if session.get_bind().dialect.name == "postgresql":
            # Another engine reading engagement now: leave it to that one this tick.
            query = query.with_for_update(skip_locked=True)
        cursor = session.scalars(query).first()
        if cursor is None:
            return 0
        position = cursor.position
        found = session.execute(
            select(
                EngagementEvent.id,
                EngagementEvent.kind,
                EngagementEvent.verdict,
                EngagementEvent.link_index,
                JourneyMessage.enrolment_id,
                JourneyMessage.step,
            )
            .outerjoin(JourneyMessage, JourneyMessage.outbox_id == EngagementEvent.message_id)
            .where(EngagementEvent.id > position)
            .order_by(EngagementEvent.id)
            .limit(ENGAGEMENT_BATCH)
        ).all()
        if not found:
            return 0
        keys: dict[str, set[str]] = defaultdict(set)
        for _, kind, verdict, link, enrolment, step in found:
            if enrolment is None or verdict != "human" or kind not in ("open", "click"):
                continue
            keys[enrolment].add(f"opened:{step}")
            if kind == "click":
                keys[enrolment].add(f"clicked:{step}")
                if link is not None:
                    keys[enrolment].add(f"clicked:{step}:{link}")
        cursor.position = found[-1].id
        woken = 0
        if keys:
            woken = deliver(session, self.journey, list(keys.items()), now)
        session.flush()
        return woken

    def _marketing_counts(
        self, session: Session, contacts: Sequence[str], now: datetime
    ) -> Counter[str]:
        """Marketing messages queued for each contact in the last 7 days, journeys and
        campaigns alike (denied ones were never sent and do not count)."""
        counts: Counter[str] = Counter()
        unique = list(dict.fromkeys(contacts))
        since = now - timedelta(days=7)
        for start in range(0, len(unique), 1000):
            chunk = unique[start : start + 1000]
            for contact, n in session.execute(
                select(OutboxMessage.contact_id, func.count())
                .join(Campaign, Campaign.id == OutboxMessage.campaign_id)
                .where(
                    OutboxMessage.contact_id.in_(chunk),
                    OutboxMessage.created_at > since,
                    OutboxMessage.state != "denied",
                    Campaign.message_class.in_(sorted(MARKETING_CLASSES)),
                )
                .group_by(OutboxMessage.contact_id)
            ):
                counts[contact] = int(n)
        return counts


JourneyOf = Callable[[Session, str], D.Journey]


def deliver(
    session: Session,
    journey_of: JourneyOf,
    wanted: Sequence[tuple[str, set[str]]],
    now: datetime,
) -> int:
    """Wake the enrolments (id, keys they may be waiting for) that wait for one of those
    keys. Exactly once: each wake is an UPDATE conditional on the row still waiting for
    that key at the same transition count; only the update that changed the row writes
    the transition."""
    t = JourneyEnrolment
    ids = [e for e, _ in wanted]
    keys = dict(wanted)
    woken = 0
    at = at_value(session, now)
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        rows = session.execute(
            select(t.id, t.journey_id, t.contact_id, t.step, t.waiting_for, t.seq, t.visits).where(
                t.id.in_(chunk), t.status == "waiting"
            )
        ).all()
        for r in rows:
            if r.waiting_for not in keys[r.id]:
                continue
            if wake_one(session, journey_of, r, r.waiting_for, now, at):
                woken += 1
    return woken


def wake_one(
    session: Session, journey_of: JourneyOf, r: Any, key: str, now: datetime, at: Any
) -> bool:
    """One conditional wake (r: id, journey_id, contact_id, step, seq, visits)."""
    journey = journey_of(session, r.journey_id)
    state = M.Enrolment(
        contact_id=r.contact_id, step=r.step, status="waiting", waiting_for=key, visits=r.visits
    )
    after = M.deliver_event(journey, state, key, now)
    t = JourneyEnrolment
    result = session.execute(
        update(t)
        .where(t.id == r.id, t.status == "waiting", t.waiting_for == key, t.seq == r.seq)
        .values(
            status=after.status,
            step=after.step,
            wake_at=None,
            waiting_for=None,
            exit_reason=after.exit_reason,
            exit_step=r.step if after.status == "exited" else None,
            seq=r.seq + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    insert_if_absent(
        session,
        JourneyTransition.__table__,
        TRANSITION_COLUMNS,
        [(r.id, r.seq, r.step, "woke", key[:512], at)],
    )
    return True


def _utc(_contact: str) -> tzinfo:
    return UTC


def at_value(session: Session, now: datetime) -> Any:
    return driver_value(session, JourneyTransition.__table__.c.at, now)


class _Decider:
    """The world's `decide` for one enrolment: records why each branch went its way (the
    transition's detail) and which decision it could not make."""

    def __init__(self, enrolment: str, engaged: dict[str, dict[str, set[tuple[str, int | None]]]]):
        self.enrolment = enrolment
        self.engaged = engaged
        self.decisions: list[str] = []
        self.problems: list[int] = []

    def decide(self, rule: A.Node, state: M.Enrolment) -> bool:
        try:
            taken, why = _decide(rule, self.enrolment, state, self.engaged)
        except _Unsupported as exc:
            self.problems.append(len(self.decisions))
            self.decisions.append(str(exc))
            return False
        self.decisions.append(why)
        return taken


def _decide(
    rule: A.Node,
    enrolment: str,
    state: M.Enrolment,
    engaged: dict[str, dict[str, set[tuple[str, int | None]]]],
) -> tuple[bool, str]:
    """A branch rule over this enrolment's own engagement, with why it came out so."""
    if isinstance(rule, A.And | A.Or):
        parts = [_decide(item, enrolment, state, engaged) for item in rule.items]
        taken = all(p[0] for p in parts) if isinstance(rule, A.And) else any(p[0] for p in parts)
        return taken, "; ".join(p[1] for p in parts)
    if isinstance(rule, A.Not):
        taken, why = _decide(rule.item, enrolment, state, engaged)
        return not taken, f"not ({why})"
    if isinstance(rule, A.Engaged) and rule.step is not None and rule.within is None:
        events = engaged.get(enrolment, {}).get(rule.step, set())
        if rule.kind == "opened":
            # A click is an open too (images off): see _read_engagement.
            taken = bool(events)
        else:
            taken = any(k == "click" and rule.link in (None, link) for k, link in events)
        sent = any(s == rule.step for s, _ in state.sent)
        why = "true" if taken else ("false" if sent else "false (no message sent)")
        return taken, f"{print_rule(rule)} is {why}"
    raise _Unsupported(f"{print_rule(rule)}: only opened()/clicked() of this journey's steps")


def _explain_branches(result: M.Result, decisions: Sequence[str]) -> M.Result:
    if not decisions:
        return result
    it = iter(decisions)
    transitions = tuple(
        replace(t, detail=next(it, "")) if t.outcome.startswith("branched_") else t
        for t in result.transitions
    )
    return replace(result, transitions=transitions)


_EFFECTFUL = {"sent", "updated", "added", "removed", "started_journey", "called"}


def _cut(result: M.Result, index: int, detail: str) -> M.Result:
    """End the enrolment at transition `index` (which is replaced by an exit): the
    effects of earlier transitions stand, later ones never happen."""
    kept = result.transitions[:index]
    step = result.transitions[index].step
    n_effects = sum(1 for t in kept if t.outcome in _EFFECTFUL)
    effects = result.effects[:n_effects]
    sent = tuple((e.step, e.visit) for e in effects if isinstance(e, M.SendEffect))
    this_run = {(e.step, e.visit) for e in result.effects if isinstance(e, M.SendEffect)}
    before = tuple(s for s in result.state.sent if s not in this_run)
    state = replace(
        result.state,
        status="exited",
        step=None,
        wake_at=None,
        waiting_for=None,
        exit_reason=UNSUPPORTED,
        sent=(*before, *sent),
    )
    return M.Result(state, effects, (*kept, M.Transition(step, "exited", detail)))


def _cut_at_branch(result: M.Result, nth: int) -> M.Result:
    branches = [i for i, t in enumerate(result.transitions) if t.outcome.startswith("branched_")]
    index = branches[nth]
    return _cut(result, index, f"{UNSUPPORTED}: {result.transitions[index].detail}")


def _cut_unsupported(result: M.Result) -> M.Result:
    for i, t in enumerate(result.transitions):
        if t.outcome in ("updated", "called"):
            kind = "update_contact" if t.outcome == "updated" else "webhook"
            return _cut(result, i, f"{UNSUPPORTED}: {kind}")
    return result
