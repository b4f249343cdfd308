"""What happened in a journey (all its versions): per step and as a funnel, read from the
stored transitions, enrolments and journey messages; and one contact's path with why each
branch went its way (`journey explain`). Read-only; no PHI (ids, step ids, counts)."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from carepost.journeys import definition as D
from carepost.journeys import service
from carepost.journeys.models import (
    JourneyEnrolment,
    JourneyMessage,
    JourneyTransition,
    JourneyVersion,
)
from carepost.staff.principal import Principal
from carepost.tracking.models import EngagementEvent

# Outcomes that are not a visit of the step: entering the journey, waking from a wait,
# reaching the goal, moving to another version, and the guards that stop an enrolment
# before the step runs.
NOT_VISITS = ("enrolled", "woke", "timed_out", "goal", "migrated")
GUARDS = ("loop_guard", "step_limit")
FINISHED = ("completed", "exit_step")


@dataclass
class StepReport:
    step: str
    kind: str
    entered: int = 0
    completed: int = 0
    waiting: int = 0
    exited: dict[str, int] = field(default_factory=dict)  # reason -> enrolments
    goal_reached: int = 0
    sends: int | None = None  # send steps only
    human_opens: int | None = None
    human_clicks: int | None = None
    # False for a step that only earlier versions have (enrolments may still be in it).
    current: bool = True

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class JourneyReport:
    name: str
    versions: int
    enrolments: int
    statuses: dict[str, int]
    steps: list[StepReport]
    drop_off: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "journey": self.name,
            "versions": self.versions,
            "enrolments": self.enrolments,
            "statuses": self.statuses,
            "steps": [s.as_dict() for s in self.steps],
            "funnel": [{"step": s.step, "entered": s.entered} for s in self.steps if s.current],
            "drop_off_step": self.drop_off,
        }


def journey_report(
    session: Session, name: str, *, principal: Principal | None = None
) -> JourneyReport:
    """Counts per step (no PHI): `reports:read`."""
    if principal is not None:
        principal.require("reports:read")
    row = service.current_version(session, name)
    if row is None:
        raise service.JourneyNotFound(f"no journey {name!r}")
    journey = service.definition_of(row)
    versions = int(session.scalar(select(func.count()).where(JourneyVersion.name == name)) or 0)
    e, t = JourneyEnrolment, JourneyTransition
    mine = e.journey_name == name
    steps = {s.id: StepReport(s.id, _kind(s.action)) for s in journey.steps}
    # Steps the newest version dropped still have visits, sends and enrolments waiting in
    # them: they follow the newest version's steps, newest version first.
    older = session.scalars(
        select(JourneyVersion)
        .where(JourneyVersion.name == name, JourneyVersion.version < row.version)
        .order_by(JourneyVersion.version.desc())
    )
    for version in older:
        for dropped in service.definition_of(version).steps:
            if dropped.id not in steps:
                steps[dropped.id] = StepReport(dropped.id, _kind(dropped.action), current=False)

    def at(step: str | None) -> StepReport | None:
        return steps.get(step or "")

    # Distinct enrolments per step: one that visited a step twice (allow_revisit) once.
    for step, n in session.execute(
        select(t.step, func.count(func.distinct(t.enrolment_id)))
        .join(e, e.id == t.enrolment_id)
        .where(
            mine, t.outcome.not_in(NOT_VISITS), ~((t.outcome == "exited") & t.detail.in_(GUARDS))
        )
        .group_by(t.step)
    ):
        target = at(step)
        if target is not None:
            target.entered = int(n)
    statuses: Counter[str] = Counter()
    here: Counter[str] = Counter()  # enrolments active or waiting at the step
    for status, where, reason, exit_step, n in session.execute(
        select(e.status, e.step, e.exit_reason, e.exit_step, func.count())
        .where(mine)
        .group_by(e.status, e.step, e.exit_reason, e.exit_step)
    ):
        statuses[status] += int(n)
        if status == "exited":
            target = at(exit_step)
            if target is None:
                continue
            if reason == "goal":
                target.goal_reached += int(n)
            else:
                why = reason or "completed"
                target.exited[why] = target.exited.get(why, 0) + int(n)
        else:
            target = at(where)
            if target is not None:
                here[target.step] += int(n)
                if status == "waiting":
                    target.waiting += int(n)
    for s in steps.values():
        ended_here = s.goal_reached + sum(
            n for reason, n in s.exited.items() if reason not in FINISHED
        )
        s.completed = max(s.entered - here[s.step] - ended_here, 0)
    m, ev = JourneyMessage, EngagementEvent
    sends = dict(
        session.execute(
            select(m.step, func.count())
            .join(e, e.id == m.enrolment_id)
            .where(mine)
            .group_by(m.step)
        ).all()
    )
    engaged: dict[tuple[str, str], int] = defaultdict(int)
    for step, kind, n in session.execute(
        select(m.step, ev.kind, func.count(func.distinct(ev.message_id)))
        .join(ev, ev.message_id == m.outbox_id)
        .join(e, e.id == m.enrolment_id)
        .where(mine, ev.verdict == "human", ev.kind.in_(("open", "click")))
        .group_by(m.step, ev.kind)
    ):
        engaged[(step, kind)] = int(n)
    for s in steps.values():
        if s.kind == "send":
            s.sends = int(sends.get(s.step, 0))
            s.human_opens = engaged[(s.step, "open")]
            s.human_clicks = engaged[(s.step, "click")]
    ordered = list(steps.values())
    drop_off = None
    worst = 0
    for before, after in itertools.pairwise(s for s in ordered if s.current):
        lost = before.entered - after.entered
        if lost > worst:
            worst, drop_off = lost, before.step
    return JourneyReport(name, versions, sum(statuses.values()), dict(statuses), ordered, drop_off)


def _kind(action: object) -> str:
    names: dict[type, str] = {
        D.Send: "send",
        D.Wait: "wait",
        D.Branch: "branch",
        D.UpdateContact: "update_contact",
        D.Goto: "goto",
        D.StartJourney: "start_journey",
        D.Webhook: "webhook",
        D.Exit: "exit",
    }
    if isinstance(action, D.SegmentChange):
        return "add_to_segment" if action.add else "remove_from_segment"
    return names.get(type(action), "step")


@dataclass(frozen=True)
class PathStep:
    seq: int
    at: datetime
    step: str
    outcome: str
    detail: str


@dataclass(frozen=True)
class Path:
    enrolment: str
    version: str
    status: str
    exit_reason: str | None
    enrolled_at: datetime
    steps: tuple[PathStep, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "enrolment": self.enrolment,
            "status": self.status,
            "exit_reason": self.exit_reason,
            "enrolled_at": self.enrolled_at.isoformat(),
            "path": [
                {
                    "seq": p.seq,
                    "at": p.at.isoformat(),
                    "step": p.step,
                    "outcome": p.outcome,
                    "detail": p.detail,
                }
                for p in self.steps
            ],
        }


def explain(session: Session, name: str, contact_id: str) -> list[Path]:
    """Every enrolment of the contact in the journey, oldest first, with its path."""
    e, t = JourneyEnrolment, JourneyTransition
    paths = []
    for row in session.scalars(
        select(e).where(e.journey_name == name, e.contact_id == contact_id).order_by(e.enrolled_at)
    ):
        steps = tuple(
            PathStep(r.seq, r.at, r.step, r.outcome, r.detail)
            for r in session.scalars(select(t).where(t.enrolment_id == row.id).order_by(t.seq))
        )
        paths.append(
            Path(row.id, row.journey_id, row.status, row.exit_reason, row.enrolled_at, steps)
        )
    return paths
