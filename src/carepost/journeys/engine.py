"""The durable journey engine: the step machine (machine.py) run over enrolments stored
in the database, one batch per tick.

A tick, in one transaction:
1. reads new human opens and clicks of journey messages (engagement_events by id, from a
   stored cursor that waits at an id not yet committed: id_cursor.py) and wakes the
   enrolments waiting for them;
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

Before that transaction a tick runs the scan triggers (scan.py, at most once per
`scan_every` of the clock) and due webhook calls (claimed with a lease, called with no
transaction open, the outcome recorded in another). Branches on contact data and
update_contact open the batch's contacts through the audited door (contact_data.py).
Times of day are in each contact's zone (contacts/zones.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import takewhile
from typing import Any

from sqlalchemy import Engine, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from carepost.account import settings as account
from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.campaigns.models import Campaign
from carepost.clock import Clock, system_clock
from carepost.consent.records import MARKETING_CLASSES
from carepost.contacts.zones import zones_of
from carepost.crypto.keyring import KeyRing
from carepost.db import bulk_update, driver_value, insert_if_absent, transaction
from carepost.delivery.models import OutboxMessage, OutboxTransition
from carepost.delivery.outbox import LANE_ONE_OFF
from carepost.id_cursor import HoleWatch, grace_for
from carepost.journeys import definition as D
from carepost.journeys import machine as M
from carepost.journeys import service, webhook
from carepost.journeys.contact_data import ContactData
from carepost.journeys.models import (
    JourneyCursor,
    JourneyEnrolment,
    JourneyMessage,
    JourneySend,
    JourneyTransition,
    JourneyVersion,
)
from carepost.journeys.scan import Scanned, scan_journeys
from carepost.journeys.webhook import WebhookConfig
from carepost.segments import ast as A
from carepost.segments.models import Segment, StaticMember
from carepost.segments.printer import print_rule
from carepost.segments.service import SegmentEngine
from carepost.tracking.models import EngagementEvent

ENGAGEMENT_CURSOR = "engagement_events"
SCAN_CURSOR = "scan"
SCAN_EVERY = timedelta(minutes=1)
CALL_BATCH = 20
ENGAGEMENT_BATCH = 5000
# The tracking classifier may relabel a stored human click as a machine's when the rest
# of a scanner's burst (within its 1 s window) arrives in a later batch: the engine acts
# on a click only once it is this old, so that a scanner cannot wake a wait.
ENGAGEMENT_SETTLE = timedelta(seconds=5)
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
    scan_enrolled: int = 0
    calls: int = 0

    def add(self, other: TickReport) -> None:
        self.scan_enrolled += other.scan_enrolled
        self.calls += other.calls
        self.claimed += other.claimed
        self.transitions += other.transitions
        self.sends += other.sends
        self.woken_by_engagement += other.woken_by_engagement
        self.exits.update(other.exits)


@dataclass
class _Batch:
    """What one batch's runs write, gathered for executemany."""

    states: list[tuple[Any, ...]] = field(default_factory=list)
    transitions: list[tuple[Any, ...]] = field(default_factory=list)
    sends: list[tuple[_Row, M.SendEffect]] = field(default_factory=list)
    segment_changes: list[tuple[str, bool, str]] = field(default_factory=list)
    starts: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    updates: list[tuple[str, Mapping[str, object]]] = field(default_factory=list)
    updating: set[str] = field(default_factory=set)


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
        ring: KeyRing | None = None,
        segments: SegmentEngine | None = None,
        webhooks: WebhookConfig | None = None,
        scan_every: timedelta = SCAN_EVERY,
    ) -> None:
        self.engine = engine
        # Opens contacts for branches on their data and update_contact (audited reads);
        # without one those steps exit with unsupported_step, and segment and date
        # triggers are not scanned.
        self.ring = ring
        self.segments = segments
        self.webhooks = webhooks or WebhookConfig()
        self.scan_every = scan_every
        self._scanned_at: datetime | None = None
        self.clock = clock
        self.batch = batch
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"[:64]
        self._holes = HoleWatch(grace_for(engine.dialect.name))
        self._journeys: dict[str, D.Journey] = {}
        self._names: dict[str, str] = {}
        self._sends: dict[str, dict[str, str]] = {}
        self._classes: dict[str, str] = {}  # campaign id -> message class

    # --- public --------------------------------------------------------------------
    def tick(self) -> TickReport:
        """One batch: the scan triggers (at most once per `scan_every`), due webhook
        calls, then engagement and up to `batch` due enrolments in one transaction."""
        report = TickReport()
        report.scan_enrolled = self.scan()
        report.calls = self.call_webhooks()
        with transaction(self.engine) as session:
            now = self.clock()
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
            busy = report.claimed or report.woken_by_engagement or report.calls
            if not busy and not report.scan_enrolled:
                break
        return total

    # --- scan triggers -------------------------------------------------------------
    def scan(self, *, force: bool = False) -> int:
        """Enrol contacts by segment, date and inactivity triggers (scan.py); at most
        once per `scan_every` of the clock unless forced. Returns contacts enrolled."""
        now = self.clock()
        if not force and self._scanned_at is not None and now - self._scanned_at < self.scan_every:
            return 0
        self._scanned_at = now
        with transaction(self.engine) as session:
            found = _scan_triggered(session)
        if not found:
            return 0
        snapshot = None
        members: dict[str, set[str]] = {}
        wants = any(isinstance(j.journey.trigger, D.SegmentTrigger | D.DateTrigger) for j in found)
        if wants and self.ring is not None:
            if self.segments is None:
                self.segments = SegmentEngine(
                    self.engine, self.ring, actor=ENGINE_ACTOR, clock=self.clock
                )
            # Outside the write transaction: building and refreshing the snapshot write
            # their own audit entries.
            self.segments.refresh(force=True)
            snapshot = self.segments.snapshot
            for item in found:
                trigger = item.journey.trigger
                if isinstance(trigger, D.SegmentTrigger):
                    try:
                        members[item.name] = set(
                            self.segments.members(A.InSegment(trigger.segment), now)
                        )
                    except A.RuleError:
                        continue  # the segment was deleted since publishing: no scan
        with transaction(self.engine) as session:
            _lock_scan(session)
            got = scan_journeys(
                session,
                found,
                now=now,
                snapshot=snapshot,
                segment_members=members,
                actor=ENGINE_ACTOR,
            )
        return sum(got.values())

    # --- webhook calls ---------------------------------------------------------------
    def call_webhooks(self) -> int:
        """Call the webhooks of enrolments at a webhook step (status calling) whose time
        has come: claim with a lease (one transaction), call with no transaction open,
        record each outcome (another). A crash between the two leaves the lease to
        expire and the call to be made again, with the same idempotency key."""
        now = self.clock()
        t = JourneyEnrolment
        with transaction(self.engine) as session:
            active = select(JourneyVersion.id).where(JourneyVersion.status == "active")
            query = (
                select(
                    t.id,
                    t.journey_id,
                    t.journey_name,
                    t.contact_id,
                    t.step,
                    t.visits,
                    t.seq,
                    t.call_attempts,
                )
                .where(
                    t.status == "calling",
                    t.wake_at <= now,
                    t.journey_id.in_(active),
                    or_(t.lease_until.is_(None), t.lease_until < now),
                )
                .order_by(t.wake_at)
                .limit(CALL_BATCH)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=t)
            claimed = session.execute(query).all()
            if not claimed:
                return 0
            calls = []
            for r in claimed:
                journey = self.journey(session, r.journey_id)
                action = journey.step(r.step).action
                assert isinstance(action, D.Webhook)  # only webhook steps call
                calls.append((r, action))
            # Calls are made one after another: the lease covers them all.
            lease = sum((a.timeout for _, a in calls), timedelta(seconds=30))
            session.execute(
                update(t)
                .where(t.id.in_([r.id for r in claimed]))
                .values(lease_owner=self.owner, lease_until=now + lease)
                .execution_options(synchronize_session=False)
            )
        outcomes = []
        for r, action in calls:
            ids: dict[str, str | int] = {
                "enrolment": r.id,
                "contact": r.contact_id,
                "journey": r.journey_name,
                "version": r.journey_id,
                "step": r.step,
                "visit": r.visits,
            }
            outcomes.append(
                webhook.call(
                    self.webhooks,
                    action.url,
                    ids,
                    idempotency_key=f"{r.id}:{r.visits}",
                    timestamp=int(self.clock().timestamp()),
                    timeout=action.timeout,
                )
            )
        with transaction(self.engine) as session:
            done = self.clock()
            for (r, _), outcome in zip(calls, outcomes, strict=True):
                self._after_call(session, r, outcome, done)
        return len(calls)

    def _after_call(
        self, session: Session, r: Any, outcome: webhook.Outcome, now: datetime
    ) -> None:
        journey = self._journeys[r.journey_id]
        state = M.Enrolment(contact_id=r.contact_id, step=r.step, status="calling", visits=r.visits)
        attempt = r.call_attempts + 1
        steps: list[tuple[str, str]] = []
        attempts = 0
        if outcome.ok:
            after = M.after_call(journey, state, True)
            steps.append(("called", outcome.detail))
        elif outcome.retry and attempt < self.webhooks.max_attempts:
            after = replace(state, wake_at=now + self.webhooks.retry_after(attempt))
            steps.append(("call_failed", f"attempt {attempt}: {outcome.detail}; will retry"))
            attempts = attempt
        else:
            after = M.after_call(journey, state, False)
            steps.append(("call_failed", f"attempt {attempt}: {outcome.detail}"))
        t = JourneyEnrolment
        changed = session.execute(
            update(t)
            .where(t.id == r.id, t.status == "calling", t.seq == r.seq, t.lease_owner == self.owner)
            .values(
                status=after.status,
                step=after.step,
                wake_at=after.wake_at,
                exit_reason=after.exit_reason,
                exit_step=r.step if after.status == "exited" else None,
                call_attempts=attempts,
                lease_owner=None,
                lease_until=None,
                seq=r.seq + len(steps),
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            return  # the lease ran out and another engine took the enrolment over
        at = at_value(session, now)
        insert_if_absent(
            session,
            JourneyTransition.__table__,
            TRANSITION_COLUMNS,
            [(r.id, r.seq + i, r.step, o, d[:512], at) for i, (o, d) in enumerate(steps)],
        )

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
        zones = zones_of(session, [r.state.contact_id for r in rows])
        counted: list[str] = []  # marketing sends counted by the run in progress

        def may_send(contact: str, message_class: str) -> bool:
            if message_class not in MARKETING_CLASSES:
                return True
            if marketing[contact] >= cap:
                return False
            # Counted now: a later send of the same run sees it.
            marketing[contact] += 1
            counted.append(contact)
            return True

        def run(row: _Row, data: ContactData | None) -> tuple[M.Result, _Decider]:
            counted.clear()
            decider = _Decider(row.id, engaged, data)
            world = M.World(
                decide=decider.decide,
                zone=zones.__getitem__,
                may_send=may_send,
                stop_at_webhook=True,
                updated=decider.updated,
                engaged=decider.engaged_already,
            )
            return M.run(self._journeys[row.journey_id], row.state, now, world), decider

        out = _Batch()
        # Most runs need nothing of the contact's record. A run that reaches a branch on
        # contact data or an update_contact is run again once those contacts are opened
        # (one audited read for the batch): the machine is pure, so the second run is the
        # real one and the first leaves no trace but its marketing count, given back.
        again: list[_Row] = []
        for row in rows:
            result, decider = run(row, None)
            wants = decider.needs_data or any(isinstance(e, M.UpdateEffect) for e in result.effects)
            if wants and self.ring is not None:
                for contact in counted:
                    marketing[contact] -= 1
                again.append(row)
            else:
                self._collect(row, result, decider, out, report, now, session)
        if again:
            assert self.ring is not None
            data = ContactData(
                session,
                self.ring,
                [r.state.contact_id for r in again],
                actor=ENGINE_ACTOR,
                now=now,
            )
            for row in again:
                result, decider = run(row, data)
                self._collect(row, result, decider, out, report, now, session)
            if out.updates:
                data.write(
                    session,
                    out.updates,
                    actor=ENGINE_ACTOR,
                    details={"journeys": sorted(out.updating)},
                )
        self._write_sends(session, out.sends, now)
        report.sends += len(out.sends)
        bulk_update(session, JourneyEnrolment.__table__, STATE_COLUMNS, ("id",), out.states)
        insert_if_absent(session, JourneyTransition.__table__, TRANSITION_COLUMNS, out.transitions)
        self._apply_segments(session, out.segment_changes, now)
        for name, contacts in out.starts.items():
            service.enrol(session, name, contacts, now=now, source="journey")

    def _collect(
        self,
        row: _Row,
        result: M.Result,
        decider: _Decider,
        out: _Batch,
        report: TickReport,
        now: datetime,
        session: Session,
    ) -> None:
        result = _explain_branches(result, decider.decisions)
        if decider.problems:
            result = _cut_at_branch(result, decider.problems[0])
        if self.ring is None:
            result = _cut_unsupported(result)
        state = result.state
        exit_step = None
        if state.status == "exited":
            exit_step = result.transitions[-1].step if result.transitions else row.state.step
            report.exits[state.exit_reason or "completed"] += 1
        for effect in result.effects:
            if isinstance(effect, M.SendEffect):
                out.sends.append((row, effect))
            elif isinstance(effect, M.SegmentEffect):
                out.segment_changes.append((effect.segment, effect.add, state.contact_id))
            elif isinstance(effect, M.StartJourneyEffect):
                out.starts[effect.journey].append(state.contact_id)
            elif isinstance(effect, M.UpdateEffect):
                out.updates.append((state.contact_id, effect.values))
                out.updating.add(self._names[row.journey_id])
        at = at_value(session, now)
        seq = row.seq
        for t in result.transitions:
            out.transitions.append((row.id, seq, t.step, t.outcome, t.detail[:512], at))
            seq += 1
        report.transitions += len(result.transitions)
        out.states.append(
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
                EngagementEvent.at,
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
        found = list(takewhile(lambda row: _settled(row.kind, row.at, now), found))
        # Ids are handed out at insert: stop at one whose transaction has not committed.
        found = found[: self._holes.readable(position, [row.id for row in found], now)]
        if not found:
            return 0
        keys: dict[str, set[str]] = defaultdict(set)
        for _, _, kind, verdict, link, enrolment, step in found:
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


def _scan_triggered(session: Session) -> list[Scanned]:
    """The newest version of each journey, if active and triggered by a scan."""
    newest: dict[str, JourneyVersion] = {}
    for row in session.scalars(select(JourneyVersion).order_by(JourneyVersion.version)):
        newest[row.name] = row
    out = []
    for name, row in sorted(newest.items()):
        if row.status != "active":
            continue
        journey = service.definition_of(row)
        if isinstance(journey.trigger, D.SegmentTrigger | D.DateTrigger | D.InactivityTrigger):
            out.append(Scanned(name, row.created_at, journey))
    return out


def _lock_scan(session: Session) -> None:
    """Scans of several engines one at a time (PostgreSQL row lock; SQLite's write lock
    serialises them anyway)."""
    insert_if_absent(session, JourneyCursor.__table__, ("name", "position"), [(SCAN_CURSOR, 0)])
    query = select(JourneyCursor).where(JourneyCursor.name == SCAN_CURSOR)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    cursor = session.scalars(query).one()
    cursor.position += 1
    session.flush()


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


def at_value(session: Session, now: datetime) -> Any:
    return driver_value(session, JourneyTransition.__table__.c.at, now)


class _Decider:
    """The world's `decide` for one enrolment: records why each branch went its way (the
    transition's detail) and which decision it could not make. Journey predicates are
    decided from the enrolment's own engagement; anything else from the contact's data
    (`data`, None until the batch opened it)."""

    def __init__(
        self,
        enrolment: str,
        engaged: dict[str, dict[str, set[tuple[str, int | None]]]],
        data: ContactData | None,
    ) -> None:
        self.enrolment = enrolment
        self.engaged = engaged
        self.data = data
        self.decisions: list[str] = []
        self.problems: list[int] = []
        self.needs_data = False
        self.overlay: dict[str, object] = {}

    def updated(self, _contact: str, values: Mapping[str, object]) -> None:
        self.overlay.update(values)

    def decide(self, rule: A.Node, state: M.Enrolment) -> bool:
        try:
            taken, why = _decide(rule, self.enrolment, state, self.engaged, self._contact)
        except _Unsupported as exc:
            self.problems.append(len(self.decisions))
            self.decisions.append(str(exc))
            return False
        self.decisions.append(why)
        return taken

    def engaged_already(self, _state: M.Enrolment, key: str) -> bool:
        return holds_key(self.engaged.get(self.enrolment, {}), key)

    def _contact(self, rule: A.Node, state: M.Enrolment) -> tuple[bool, str]:
        if self.data is None:
            self.needs_data = True
            raise _Unsupported(f"{print_rule(rule)}: needs the contact's data")
        taken = self.data.holds(rule, state.contact_id, self.overlay)
        # Transitions hold no PHI: whether a contact meets a rule about its record is not
        # written down; the branch taken is the only trace.
        return taken, f"{print_rule(rule)}: contact data (not recorded)"


ContactRule = Callable[[A.Node, M.Enrolment], tuple[bool, str]]


def _settled(kind: str, at: datetime, now: datetime) -> bool:
    """Whether the engagement cursor may act on an event yet. Only clicks are relabelled;
    a click stamped ahead of the engine's clock (another host's skew) is not waited for,
    or one such row would hold the cursor until that time."""
    return kind != "click" or not now - ENGAGEMENT_SETTLE < at <= now


def holds_key(events: Mapping[str, set[tuple[str, int | None]]], key: str) -> bool:
    """Whether an enrolment's human opens and clicks (send step -> (kind, link)) meet an
    engagement wait's key, `opened:<step>` or `clicked:<step>[:<link>]`, as
    `_read_engagement` would have woken it (a click is an open too)."""
    kind, _, rest = key.partition(":")
    step, _, link = rest.partition(":")
    seen = events.get(step, set())
    if kind == "opened":
        return bool(seen)
    return any(k == "click" and (not link or int(link) == n) for k, n in seen)


def _decide(
    rule: A.Node,
    enrolment: str,
    state: M.Enrolment,
    engaged: dict[str, dict[str, set[tuple[str, int | None]]]],
    contact: ContactRule,
) -> tuple[bool, str]:
    """A branch rule over this enrolment's own engagement and the contact's data, with
    why it came out so. A part with no journey predicate is one question about the
    contact's data."""
    if not A.journey_predicates(rule):
        return contact(rule, state)
    if isinstance(rule, A.And | A.Or):
        parts = [_decide(item, enrolment, state, engaged, contact) for item in rule.items]
        taken = all(p[0] for p in parts) if isinstance(rule, A.And) else any(p[0] for p in parts)
        return taken, "; ".join(p[1] for p in parts)
    if isinstance(rule, A.Not):
        taken, why = _decide(rule.item, enrolment, state, engaged, contact)
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
    return contact(rule, state)


def _explain_branches(result: M.Result, decisions: Sequence[str]) -> M.Result:
    if not decisions:
        return result
    it = iter(decisions)
    transitions = tuple(
        replace(t, detail=next(it, "")) if t.outcome.startswith("branched_") else t
        for t in result.transitions
    )
    return replace(result, transitions=transitions)


_EFFECTFUL = {"sent", "updated", "added", "removed", "started_journey", "calling", "called"}


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
    """Without a key ring (an engine made for benchmarks) contacts cannot be updated."""
    for i, t in enumerate(result.transitions):
        if t.outcome == "updated":
            return _cut(result, i, f"{UNSUPPORTED}: update_contact (no key ring)")
    return result
