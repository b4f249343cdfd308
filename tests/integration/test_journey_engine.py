"""The journey engine on the test clock, on SQLite and PostgreSQL: publishing and
versions, sends through the hidden campaigns into the outbox (idempotent), timers,
engagement waits and branches, the frequency cap, re-entry and guards."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from carepost.account import settings as account
from carepost.audit.actor import Actor
from carepost.campaigns.models import Campaign
from carepost.db import transaction
from carepost.delivery.models import OutboxMessage
from carepost.id_cursor import LATE_COMMIT_GRACE
from carepost.journeys import definition as D
from carepost.journeys import service
from carepost.journeys.engine import ENGAGEMENT_SETTLE, JourneyEngine, outbox_id
from carepost.journeys.models import JourneyEnrolment, JourneyMessage, JourneyTransition
from carepost.tracking.models import EngagementEvent
from carepost.workspace import Workspace
from journey_support import SENDER, StepClock, engage, publish, setup, track


def _enrol(ws: Workspace, actor: Actor, name: str, ids: list[str], clock: StepClock) -> None:
    with transaction(ws.engine) as session:
        service.do_enrol(session, name, ids, actor=actor, clock=clock)


def _statuses(ws: Workspace) -> Counter[tuple[str, str | None]]:
    with transaction(ws.engine) as session:
        return Counter(
            (s, r)
            for s, r in session.execute(
                select(JourneyEnrolment.status, JourneyEnrolment.exit_reason)
            )
        )


def _sends(ws: Workspace) -> Counter[str]:
    with transaction(ws.engine) as session:
        return Counter(
            session.scalars(
                select(JourneyMessage.step).join(
                    OutboxMessage, OutboxMessage.id == JourneyMessage.outbox_id
                )
            )
        )


def test_publish_versions_pause_and_checks(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    setup(workspace, actor, 2)
    first = publish(workspace, actor, "welcome-series", clock)
    second = publish(workspace, actor, "welcome-series", clock)
    assert (first.row.version, second.row.version) == (1, 2)
    with transaction(workspace.engine) as session:
        kinds = Counter(session.scalars(select(Campaign.kind)))
        assert kinds == {"journey": 6}  # three send steps, two versions
        assert service.do_set_status(session, "welcome-series", "paused", actor=actor) == 2
        assert set(session.scalars(select(Campaign.status))) == {"paused"}
        listed = service.list_journeys(session)
        assert [(j.name, j.version, j.status) for j in listed] == [("welcome-series", 2, "paused")]
    bad = (
        b"name: x\ntrigger: {manual: {}}\nsteps:\n"
        b"  - id: a\n    send: {template: nope, class: marketing}\n"
    )
    with pytest.raises(D.DefinitionError) as exc, transaction(workspace.engine) as session:
        service.do_publish_journey(session, bad, sender_id=SENDER, actor=actor)
    assert exc.value.problems == [("steps[0] (a).send.template", "no template 'nope'")]
    wrong = bad.replace(b"nope", b"welcome").replace(b"marketing", b"treatment")
    with pytest.raises(D.DefinitionError) as exc, transaction(workspace.engine) as session:
        service.do_publish_journey(session, wrong, sender_id=SENDER, actor=actor)
    assert "is of class marketing" in str(exc.value)


def test_welcome_series_runs_to_completion(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 20)
    publish(workspace, actor, "welcome-series", clock)
    _enrol(workspace, actor, "welcome-series", ids, clock)
    engine = JourneyEngine(workspace.engine, clock, batch=7)
    first = engine.run_until_idle()
    assert first.transitions == 20 * 2  # welcome sent, pause-1 waiting
    assert _sends(workspace) == {"welcome": 20}
    assert _statuses(workspace) == {("waiting", None): 20}
    clock.advance(days=3)
    engine.run_until_idle()
    assert _sends(workspace) == {"welcome": 20, "tips": 20}
    # 7 read the welcome, 3 others clicked tips; 4 machine opens count for nothing.
    engage(workspace, "welcome", ids[:7], "open", clock)
    engage(workspace, "tips", ids[7:10], "click", clock, link=1)
    engage(workspace, "tips", ids[10:14], "open", clock, verdict="machine")
    clock.advance(days=4)
    engine.run_until_idle()
    assert _sends(workspace) == {"welcome": 20, "tips": 20, "invite": 10}
    assert _statuses(workspace) == {("exited", "exit_step"): 20}
    with transaction(workspace.engine) as session:
        outbox = session.scalar(select(func.count()).select_from(OutboxMessage))
        assert outbox == 50
        branches = Counter(
            session.scalars(
                select(JourneyTransition.outcome).where(JourneyTransition.step == "engaged")
            )
        )
        assert branches == {"branched_then": 10, "branched_else": 10}
        detail = session.scalar(
            select(JourneyTransition.detail)
            .where(
                JourneyTransition.step == "engaged",
                JourneyTransition.outcome == "branched_else",
            )
            .limit(1)
        )
        assert detail == 'opened(step="welcome") is false; opened(step="tips") is false'
    # Nothing more happens, however long we wait.
    clock.advance(days=60)
    assert engine.run_until_idle().claimed == 0


def test_send_is_idempotent_and_outbox_id_deterministic(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 3)
    publish(workspace, actor, "welcome-series", clock)
    _enrol(workspace, actor, "welcome-series", ids, clock)
    engine = JourneyEngine(workspace.engine, clock)
    engine.run_until_idle()
    with transaction(workspace.engine) as session:
        rows = session.execute(select(JourneyEnrolment.id, JourneyEnrolment.contact_id)).all()
        for enrolment, contact in rows:
            oid = outbox_id(enrolment, 1)
            assert session.get(OutboxMessage, oid).contact_id == contact  # type: ignore[union-attr]
        # Put the enrolments back where they were before the tick (as a crash between
        # the outbox write and the state write would): the re-run queues nothing new.
        session.execute(
            JourneyEnrolment.__table__.update().values(
                status="active",
                step="welcome",
                visited="[]",
                visits=0,
                sent="[]",
                wake_at=None,
            )
        )
    engine.run_until_idle()
    assert _sends(workspace) == {"welcome": 3}
    with transaction(workspace.engine) as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 3


def test_frequency_cap_counts_campaigns_and_journeys(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 4)
    with transaction(workspace.engine) as session:
        account.do_set_setting(session, "journeys.marketing_per_week", "1", actor=actor)
    publish(workspace, actor, "welcome-series", clock)
    _enrol(workspace, actor, "welcome-series", ids, clock)
    engine = JourneyEngine(workspace.engine, clock)
    engine.run_until_idle()
    clock.advance(days=3)
    engine.run_until_idle()
    # tips came 3 days after welcome: over the cap of 1 a week, skipped.
    assert _sends(workspace) == {"welcome": 4}
    with transaction(workspace.engine) as session:
        skipped = session.scalars(
            select(JourneyTransition.detail).where(JourneyTransition.outcome == "skipped")
        ).all()
    assert skipped == ["frequency_cap"] * 4


def test_reentry_policies(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 2)
    publish(workspace, actor, "refill-reminder", clock)  # reentry after 25 days
    publish(workspace, actor, "welcome-series", clock)  # reentry never
    engine = JourneyEngine(workspace.engine, clock)
    with transaction(workspace.engine) as session:
        first = service.do_enrol(session, "refill-reminder", ids[:1], actor=actor, clock=clock)
        again = service.do_enrol(session, "refill-reminder", ids[:1], actor=actor, clock=clock)
    assert (len(first.enrolled), again.refused) == (1, {"already_enrolled": 1})
    engine.run_until_idle()
    clock.advance(days=4)
    engine.run_until_idle()  # the 3-day wait times out, fallback sent, done
    with transaction(workspace.engine) as session:
        soon = service.do_enrol(session, "refill-reminder", ids[:1], actor=actor, clock=clock)
    assert soon.refused == {"reentry_too_soon": 1}
    clock.advance(days=22)
    with transaction(workspace.engine) as session:
        later = service.do_enrol(session, "refill-reminder", ids[:1], actor=actor, clock=clock)
        w1 = service.do_enrol(session, "welcome-series", ids, actor=actor, clock=clock)
    assert len(later.enrolled) == 1
    assert len(w1.enrolled) == 2
    for _ in range(10):
        engine.run_until_idle()
        clock.advance(days=1)
    with transaction(workspace.engine) as session:
        never = service.do_enrol(session, "welcome-series", ids, actor=actor, clock=clock)
    assert never.refused == {"reentry_never": 2}


OPEN_AFTER_PAUSE = b"""
name: open-after-pause
trigger: {manual: {}}
steps:
  - id: notify
    send: {template: lab-result-ready, class: treatment}
  - id: pause
    wait: {duration: 1d}
  - id: seen
    wait: {event: opened, step: notify, timeout: 2d, on_timeout: nudge}
    next: done
  - id: nudge
    send: {template: lab-result-reminder, class: treatment}
  - id: done
    exit: {}
"""


def test_an_open_before_the_engagement_wait_passes_it(workspace: Workspace, actor: Actor) -> None:
    """Opened during the pause, before the wait for the open began: the wait is passed
    when entered, not left to time out into the nudge."""
    clock = StepClock()
    ids = setup(workspace, actor, 6)
    with transaction(workspace.engine) as session:
        service.do_publish_journey(
            session, OPEN_AFTER_PAUSE, sender_id=SENDER, actor=actor, clock=clock
        )
    _enrol(workspace, actor, "open-after-pause", ids, clock)
    engine = JourneyEngine(workspace.engine, clock)
    engine.run_until_idle()
    clock.advance(hours=2)
    engage(workspace, "notify", ids[:2], "open", clock)
    engage(workspace, "notify", ids[2:3], "click", clock, link=0)  # a click is an open
    engage(workspace, "notify", ids[3:4], "open", clock, verdict="machine")  # a proxy
    engine.run_until_idle()  # the engagement cursor reads them; nobody waits for them yet
    assert _statuses(workspace) == {("waiting", None): 6}
    clock.advance(days=1)
    engine.run_until_idle()
    assert _statuses(workspace) == {("exited", "exit_step"): 3, ("waiting", None): 3}
    with transaction(workspace.engine) as session:
        passed = Counter(
            session.scalars(
                select(JourneyTransition.detail).where(
                    JourneyTransition.step == "seen", JourneyTransition.outcome == "woke"
                )
            )
        )
    assert passed == {"already": 3}
    clock.advance(days=2)
    engine.run_until_idle()
    assert _sends(workspace) == {"notify": 6, "nudge": 3}
    assert _statuses(workspace) == {("exited", "exit_step"): 6}


def test_an_open_committed_late_is_not_passed_by_the_cursor(
    workspace: Workspace, actor: Actor
) -> None:
    """PostgreSQL numbers an event when it is inserted: an open whose transaction commits
    after a later-numbered one is still read, and a hole left by a rollback holds the
    cursor for the grace only."""
    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no id is committed out of order")
    clock = StepClock()
    ids = setup(workspace, actor, 4)
    publish(workspace, actor, "lab-result", clock)
    _enrol(workspace, actor, "lab-result", ids, clock)
    engine = JourneyEngine(workspace.engine, clock)
    engine.run_until_idle()
    assert _statuses(workspace) == {("waiting", None): 4}
    with Session(workspace.engine) as slow:
        track(slow, "notify", ids[:1], "open", clock)  # numbered first, committed last
        with transaction(workspace.engine) as fast:
            track(fast, "notify", ids[1:2], "open", clock)
        assert engine.run_until_idle().woken_by_engagement == 0  # it waits at the hole
        slow.commit()
    assert engine.run_until_idle().woken_by_engagement == 2
    with Session(workspace.engine) as gone:
        track(gone, "notify", ids[2:3], "open", clock)
        gone.rollback()
    engage(workspace, "notify", ids[3:4], "open", clock)
    assert engine.run_until_idle().woken_by_engagement == 0  # behind the hole
    clock.advance(seconds=LATE_COMMIT_GRACE.total_seconds() - 1)
    assert engine.run_until_idle().woken_by_engagement == 0
    clock.advance(seconds=1)
    assert engine.run_until_idle().woken_by_engagement == 1
    assert _statuses(workspace) == {("exited", "exit_step"): 3, ("waiting", None): 1}


def test_a_click_relabelled_a_scanner_s_before_it_settles_wakes_nobody(
    workspace: Workspace, actor: Actor
) -> None:
    """The classifier relabels a stored human click when the rest of a scanner's burst
    arrives in a later batch; the engine acts on clicks once settled, so it sees the
    final verdict. A click stamped ahead of the engine's clock is not waited for."""
    clock = StepClock()
    ids = setup(workspace, actor, 3)
    publish(workspace, actor, "lab-result", clock)
    _enrol(workspace, actor, "lab-result", ids, clock)
    engine = JourneyEngine(workspace.engine, clock)
    engine.run_until_idle()
    ahead = StepClock(clock.now + timedelta(hours=1))  # another host's skewed clock
    engage(workspace, "notify", ids[2:], "click", ahead, link=0)
    engage(workspace, "notify", ids[:2], "click", clock, link=0)
    assert engine.run_until_idle().woken_by_engagement == 1  # ids[2]; the rest wait
    with transaction(workspace.engine) as session:
        # What ingest.py writes for a relabelled click.
        session.execute(
            update(EngagementEvent)
            .where(EngagementEvent.contact_id == ids[0])
            .values(verdict="machine", reason="burst")
        )
    clock.advance(seconds=ENGAGEMENT_SETTLE.total_seconds())
    assert engine.run_until_idle().woken_by_engagement == 1
    with transaction(workspace.engine) as session:
        waiting = session.scalars(
            select(JourneyEnrolment.contact_id).where(JourneyEnrolment.status == "waiting")
        ).all()
    assert waiting == [ids[0]]
