"""The six example journeys (examples/journeys) run to completion on the test clock over
a generated population, with deterministic engagement created here (human opens and
clicks of chosen contacts' messages, events for chosen contacts), and exact counts per
step; plus the loop and step-limit guards. On SQLite and PostgreSQL.

Date and inactivity triggers are not scanned yet: those journeys' contacts are enrolled
by hand here (`carepost journey enrol`), the rest of the run is the engine's."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from carepost.audit.actor import Actor
from carepost.db import transaction
from carepost.delivery.models import OutboxMessage
from carepost.journeys import events, service
from carepost.journeys.engine import JourneyEngine
from carepost.journeys.models import JourneyEnrolment, JourneyMessage, JourneyTransition
from carepost.journeys.report import journey_report
from carepost.segments.models import Segment, StaticMember
from carepost.tracking.service import TrackedEvent, record_tracked
from carepost.workspace import Workspace
from journey_support import SENDER, StepClock, publish, setup


def _engage(
    ws: Workspace,
    step: str,
    contacts: list[str],
    kind: str,
    clock: StepClock,
    link: int | None = None,
) -> None:
    with transaction(ws.engine) as session:
        rows = session.execute(
            select(JourneyMessage.outbox_id, OutboxMessage.contact_id, OutboxMessage.campaign_id)
            .join(OutboxMessage, OutboxMessage.id == JourneyMessage.outbox_id)
            .where(JourneyMessage.step == step, OutboxMessage.contact_id.in_(contacts))
        ).all()
        assert len(rows) == len(contacts)
        record_tracked(
            session,
            [
                TrackedEvent(c, oid, camp, kind, link, "human", "test", 0.9, None, clock.now)
                for oid, c, camp in rows
            ],
        )


def _event(ws: Workspace, actor: Actor, name: str, contacts: list[str], clock: StepClock) -> None:
    for c in contacts:
        with transaction(ws.engine) as session:
            events.do_send_event(session, name, c, {}, actor=actor, clock=clock)


def _enrol(ws: Workspace, actor: Actor, name: str, ids: list[str], clock: StepClock) -> None:
    with transaction(ws.engine) as session:
        service.do_enrol(session, name, ids, actor=actor, clock=clock)


def _counts(ws: Workspace, name: str) -> dict[str, tuple[int, int, int, dict[str, int], int]]:
    """step -> (entered, completed, waiting, exited, sends) from `journey report`. An
    enrolment that finishes the journey at a step (completed, exit step) completed it."""
    with transaction(ws.engine) as session:
        rep = journey_report(session, name)
    return {s.step: (s.entered, s.completed, s.waiting, s.exited, s.sends or 0) for s in rep.steps}


def _reasons(ws: Workspace, name: str) -> Counter[str | None]:
    with transaction(ws.engine) as session:
        return Counter(
            session.scalars(
                select(JourneyEnrolment.exit_reason).where(JourneyEnrolment.journey_name == name)
            )
        )


def test_refill_reminder(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 12)
    publish(workspace, actor, "refill-reminder", clock)
    engine = JourneyEngine(workspace.engine, clock, batch=5)
    _event(workspace, actor, "refill_due", ids, clock)
    engine.run_until_idle()
    clock.advance(hours=10)
    _engage(workspace, "remind", ids[:4], "click", clock, link=0)  # the refill link
    _engage(workspace, "remind", ids[4:6], "click", clock, link=1)  # another link: no
    _event(workspace, actor, "purchase", ids[6:9], clock)  # the goal
    engine.run_until_idle()
    clock.advance(days=3)
    engine.run_until_idle()
    assert _reasons(workspace, "refill-reminder") == {"exit_step": 9, "goal": 3}
    assert _counts(workspace, "refill-reminder") == {
        "remind": (12, 12, 0, {}, 12),
        "wait-click": (12, 9, 0, {}, 0),
        "fallback": (5, 5, 0, {}, 5),
        "done": (9, 9, 0, {"exit_step": 9}, 0),
    }
    with transaction(workspace.engine) as session:
        rep = journey_report(session, "refill-reminder")
    goal = {s.step: s.goal_reached for s in rep.steps}
    assert goal["wait-click"] == 3


def test_lab_result(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 10)
    publish(workspace, actor, "lab-result", clock)
    engine = JourneyEngine(workspace.engine, clock)
    _event(workspace, actor, "lab_result_available", ids, clock)
    engine.run_until_idle()
    clock.advance(hours=5)
    _engage(workspace, "notify", ids[:5], "open", clock)
    _engage(workspace, "notify", ids[5:6], "click", clock, link=0)  # images off: a click
    engine.run_until_idle()
    clock.advance(days=2)
    engine.run_until_idle()
    assert _reasons(workspace, "lab-result") == {"exit_step": 10}
    assert _counts(workspace, "lab-result") == {
        "notify": (10, 10, 0, {}, 10),
        "seen": (10, 10, 0, {}, 0),
        "nudge": (4, 4, 0, {}, 4),
        "done": (10, 10, 0, {"exit_step": 10}, 0),
    }


def test_re_engagement(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 8)
    publish(workspace, actor, "re-engagement", clock)
    engine = JourneyEngine(workspace.engine, clock)
    _enrol(workspace, actor, "re-engagement", ids, clock)
    engine.run_until_idle()
    clock.advance(days=2)
    _engage(workspace, "miss-you", ids[:3], "click", clock, link=0)
    engine.run_until_idle()
    clock.advance(days=14)
    engine.run_until_idle()
    assert _counts(workspace, "re-engagement") == {
        "miss-you": (8, 8, 0, {}, 8),
        "wait-click": (8, 8, 0, {}, 0),
        "tag-dormant": (5, 5, 0, {}, 0),
        "done": (8, 8, 0, {"exit_step": 8}, 0),
    }
    with transaction(workspace.engine) as session:
        members = set(
            session.scalars(
                select(StaticMember.contact_id)
                .join(Segment, Segment.id == StaticMember.segment_id)
                .where(Segment.name == "dormant")
            )
        )
    assert members == set(ids[3:])


def test_birthday_and_post_visit_survey(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 6)
    publish(workspace, actor, "birthday", clock)
    survey = publish(workspace, actor, "post-visit-survey", clock)
    # update_contact is not carried out yet: said at publish, and the enrolment exits.
    assert len(survey.warnings) == 1
    assert "unsupported_step" in survey.warnings[0]
    engine = JourneyEngine(workspace.engine, clock)
    _enrol(workspace, actor, "birthday", ids[:4], clock)
    _enrol(workspace, actor, "post-visit-survey", ids, clock)
    engine.run_until_idle()
    assert _reasons(workspace, "birthday") == {"completed": 4}
    assert _counts(workspace, "birthday") == {"greet": (4, 4, 0, {"completed": 4}, 4)}
    assert _reasons(workspace, "post-visit-survey") == {"unsupported_step": 6}
    assert _counts(workspace, "post-visit-survey") == {
        "survey": (6, 6, 0, {}, 6),
        "mark": (6, 0, 0, {"unsupported_step": 6}, 0),
    }


LOOP = b"""
name: loop
trigger: {manual: {}}
steps:
  - id: hello
    send: {template: lab-result-ready, class: treatment}
  - id: pause
    wait: {duration: 1d}
  - id: back
    goto: {step: hello}
"""
LIMIT = b"""
name: limited
trigger: {manual: {}}
max_steps: 7
steps:
  - id: pause
    wait: {duration: 1d}
    allow_revisit: true
  - id: back
    goto: {step: pause}
    allow_revisit: true
"""


def test_loop_and_step_limit_guards(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 3)
    with transaction(workspace.engine) as session:
        for doc in (LOOP, LIMIT):
            service.do_publish_journey(session, doc, sender_id=SENDER, actor=actor, clock=clock)
    _enrol(workspace, actor, "loop", ids, clock)
    _enrol(workspace, actor, "limited", ids, clock)
    engine = JourneyEngine(workspace.engine, clock)
    for _ in range(6):
        engine.run_until_idle()
        clock.advance(days=1)
    assert _reasons(workspace, "loop") == {"loop_guard": 3}
    assert _reasons(workspace, "limited") == {"step_limit": 3}
    with transaction(workspace.engine) as session:
        sends = Counter(session.scalars(select(JourneyMessage.step)))
        guards = Counter(
            session.execute(
                select(JourneyTransition.step, JourneyTransition.detail).where(
                    JourneyTransition.outcome == "exited"
                )
            )
        )
    assert sends == {"hello": 3}  # sent once per enrolment, never again
    assert guards == {("hello", "loop_guard"): 3, ("back", "step_limit"): 3}
