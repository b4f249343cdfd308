"""A dry run of a journey: a generated population goes through it on a simulated clock,
with a simulated engagement model, through the same step machine the engine runs. It
writes nothing and sends nothing; it says how many contacts would reach each step and how
many messages of each class would go out.

The model (every rate is an option of `carepost journey simulate`, seeded, so a run is
repeatable):
- Arrival: event, segment and manual triggers enrol the population spread evenly over the
  first day. Date triggers give each contact a date (birthday: a day of the year; a visit
  or appointment: a day within the simulated period) and enrol those whose date, moved
  by the offset, falls within the period, at the trigger's time in the contact's zone.
  Inactivity enrols `inactive_rate` of the population on the first day.
- Engagement, per message: a person opens it with `open_rate` after a delay drawn from
  an exponential law (mean `open_delay_hours`), and, having opened, clicks with
  `click_rate` (link 0 with `first_link_share`, else another link). Machine opens and
  clicks are not simulated: journeys read human events only.
- Named events a wait or a goal waits for happen with `event_rate` per enrolment, at an
  even time within the wait (or within the period, for the goal).
- Branch rules: And/Or/Not and the journey predicates (opened/clicked of this
  enrolment's messages) are evaluated exactly; any other predicate (age, conditions) is
  true for `attribute_rate` of the contacts, drawn once per contact and rule clause.
- Marketing frequency cap: at most `marketing_per_week` marketing messages per contact in
  any 7 days; a capped send is skipped, as the engine does.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from carepost.consent.records import MARKETING_CLASSES
from carepost.journeys import definition as D
from carepost.journeys import machine as M
from carepost.segments import ast as A

ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
MAX_ENROLMENT_RUNS = 10_000  # a journey that keeps waking an enrolment is a bug, not a load


@dataclass(frozen=True)
class Model:
    open_rate: float = 0.25
    open_delay_hours: float = 8.0
    click_rate: float = 0.2
    first_link_share: float = 0.6
    event_rate: float = 0.1
    attribute_rate: float = 0.5
    inactive_rate: float = 0.3
    marketing_per_week: int = 3

    def __post_init__(self) -> None:
        for name in ("open_rate", "click_rate", "first_link_share", "event_rate"):
            _rate(name, getattr(self, name))
        _rate("attribute_rate", self.attribute_rate)
        _rate("inactive_rate", self.inactive_rate)
        if self.open_delay_hours <= 0:
            raise ValueError("open_delay_hours must be more than 0")
        if self.marketing_per_week < 0:
            raise ValueError("marketing_per_week must be 0 or more")


def _rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")


@dataclass
class StepCounts:
    entered: int = 0  # contacts that reached the step at least once
    visits: int = 0
    waiting: int = 0  # still waiting here at the end of the period
    exited: Counter[str] = field(default_factory=Counter)  # exit reason -> contacts
    outcomes: Counter[str] = field(default_factory=Counter)


@dataclass
class SimulationReport:
    journey: str
    population: int
    days: int
    seed: int
    enrolled: int = 0
    completed: int = 0
    goal_reached: int = 0
    still_active: int = 0
    messages: Counter[str] = field(default_factory=Counter)  # class -> messages
    capped: int = 0
    steps: dict[str, StepCounts] = field(default_factory=dict)
    effects: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "journey": self.journey,
            "population": self.population,
            "days": self.days,
            "seed": self.seed,
            "enrolled": self.enrolled,
            "completed": self.completed,
            "goal_reached": self.goal_reached,
            "still_active": self.still_active,
            "messages": dict(sorted(self.messages.items())),
            "frequency_capped": self.capped,
            "effects": dict(sorted(self.effects.items())),
            "steps": [
                {
                    "step": step_id,
                    "entered": c.entered,
                    "visits": c.visits,
                    "waiting": c.waiting,
                    "exited": dict(sorted(c.exited.items())),
                    "outcomes": dict(sorted(c.outcomes.items())),
                }
                for step_id, c in self.steps.items()
            ],
        }


@dataclass
class _Contact:
    id: str
    zone: tzinfo
    marketing_sent: list[datetime] = field(default_factory=list)
    attributes: dict[A.Node, bool] = field(default_factory=dict)


@dataclass
class _Run:
    contact: _Contact
    state: M.Enrolment
    # (step id, visit) -> (human open time or None, click time or None, clicked link)
    engagement: dict[tuple[str, int], tuple[datetime | None, datetime | None, int]] = field(
        default_factory=dict
    )
    goal_at: datetime | None = None
    runs: int = 0
    last_step: str | None = None  # where the enrolment was when it last moved


def simulate(
    journey: D.Journey,
    *,
    population: int,
    days: int,
    start: datetime,
    seed: int = 1,
    model: Model | None = None,
) -> SimulationReport:
    if population < 1 or population > 1_000_000:
        raise ValueError("population must be from 1 to 1,000,000")
    if days < 1 or days > 3650:
        raise ValueError("days must be from 1 to 3650")
    if start.tzinfo is None:
        raise ValueError("start needs its UTC offset")
    model = model or Model()
    rng = random.Random(seed)
    end = start + timedelta(days=days)
    report = SimulationReport(journey.name, population, days, seed)
    report.steps = {s.id: StepCounts() for s in journey.steps}
    zones = [ZoneInfo(z) for z in ZONES]
    contacts = [_Contact(f"sim-{i:07d}", rng.choice(zones)) for i in range(population)]
    runs: list[_Run] = []
    queue: list[tuple[datetime, int, int]] = []  # (when, tie-break, run index)
    for contact in contacts:
        when = _arrival(journey.trigger, contact, start, end, rng, model)
        if when is None:
            continue
        run = _Run(contact, M.start(journey, contact.id))
        if journey.goal_event is not None and rng.random() < model.event_rate:
            run.goal_at = when + timedelta(seconds=rng.uniform(0, (end - when).total_seconds()))
        runs.append(run)
        heapq.heappush(queue, (when, len(runs) - 1, len(runs) - 1))
    report.enrolled = len(runs)
    visited: dict[str, set[str]] = defaultdict(set)
    seq = len(runs)
    while queue:
        now, _, index = heapq.heappop(queue)
        if now >= end:
            break
        run = runs[index]
        if run.goal_at is not None and run.goal_at <= now and run.state.status != "exited":
            run.state = M.Enrolment(run.contact.id, None, "exited", exit_reason="goal")
            report.goal_reached += 1
            continue
        run.runs += 1
        if run.runs > MAX_ENROLMENT_RUNS:
            raise RuntimeError(f"enrolment of {run.contact.id} woke {MAX_ENROLMENT_RUNS} times")
        result = M.run(journey, run.state, now, _world(run, now, rng, model))
        for t in result.transitions:
            counts = report.steps[t.step]
            counts.outcomes[t.outcome] += 1
            if t.outcome == "skipped":
                report.capped += 1
            guard = t.outcome == "exited" and t.detail in ("loop_guard", "step_limit")
            if t.outcome not in ("timed_out", "woke") and not guard:
                counts.visits += 1
                visited[t.step].add(run.contact.id)
            run.last_step = t.step
        for effect in result.effects:
            report.effects[type(effect).__name__.removesuffix("Effect").lower()] += 1
            if isinstance(effect, M.SendEffect):
                report.messages[effect.message_class] += 1
                run.engagement[(effect.step, effect.visit)] = _engage(now, rng, model)
        run.state = result.state
        if run.state.status == "waiting":
            wake = _next_wake(journey, run, now, rng, model)
            if run.goal_at is not None and run.goal_at < wake:
                wake = run.goal_at
            seq += 1
            heapq.heappush(queue, (wake, seq, index))
    for run in runs:
        state = run.state
        if state.status == "exited":
            if state.exit_reason in ("completed", "exit_step"):
                report.completed += 1
            if run.last_step is not None and state.exit_reason != "goal":
                report.steps[run.last_step].exited[state.exit_reason or "completed"] += 1
        else:
            report.still_active += 1
            if state.step is not None and state.status == "waiting":
                report.steps[state.step].waiting += 1
    for step_id, ids in visited.items():
        report.steps[step_id].entered = len(ids)
    return report


def _world(run: _Run, now: datetime, rng: random.Random, model: Model) -> M.World:
    def decide(rule: A.Node, _state: M.Enrolment) -> bool:
        return _decide(rule, run, now, rng, model)

    def zone(_contact: str) -> tzinfo:
        return run.contact.zone

    def may_send(_contact: str, message_class: str) -> bool:
        return _may_send(run.contact, message_class, now, model)

    def engaged(_state: M.Enrolment, key: str) -> bool:
        at = _engaged_at(key, run)
        return at is not None and at <= now

    return M.World(decide=decide, zone=zone, may_send=may_send, engaged=engaged)


def _arrival(
    trigger: D.Trigger,
    contact: _Contact,
    start: datetime,
    end: datetime,
    rng: random.Random,
    model: Model,
) -> datetime | None:
    first_day = timedelta(seconds=rng.uniform(0, 86400))
    if isinstance(trigger, D.SegmentTrigger | D.EventTrigger | D.ManualTrigger):
        return start + first_day
    if isinstance(trigger, D.InactivityTrigger):
        return start + first_day if rng.random() < model.inactive_rate else None
    if trigger.attribute == "birthday":
        year = start.year
        day_of_year = rng.randrange(365)
        date = datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=day_of_year)
        if date + timedelta(days=trigger.offset_days) < start:
            date = date.replace(year=year + 1)
    else:
        date = start + timedelta(seconds=rng.uniform(0, (end - start).total_seconds()))
    local_day = (date + timedelta(days=trigger.offset_days)).astimezone(contact.zone)
    when = local_day.replace(
        hour=trigger.at.hour, minute=trigger.at.minute, second=0, microsecond=0
    ).astimezone(UTC)
    return when if start <= when < end else None


def _engage(
    sent: datetime, rng: random.Random, model: Model
) -> tuple[datetime | None, datetime | None, int]:
    if rng.random() >= model.open_rate:
        return None, None, -1
    opened = sent + timedelta(hours=rng.expovariate(1 / model.open_delay_hours))
    if rng.random() >= model.click_rate:
        return opened, None, -1
    link = 0 if rng.random() < model.first_link_share else 1
    return opened, opened + timedelta(seconds=rng.uniform(5, 300)), link


def _next_wake(
    journey: D.Journey, run: _Run, now: datetime, rng: random.Random, model: Model
) -> datetime:
    """When this waiting enrolment next moves: its timer, or the awaited event if the
    model makes it happen first (then the event is delivered to it here)."""
    state = run.state
    assert state.wake_at is not None
    key = state.waiting_for
    if key is None:
        return state.wake_at
    happened = _awaited(key, run, now, state.wake_at, rng, model)
    if happened is None:
        return state.wake_at
    run.state = M.deliver_event(journey, state, key, happened)
    return happened


def _awaited(
    key: str, run: _Run, now: datetime, deadline: datetime, rng: random.Random, model: Model
) -> datetime | None:
    if key.partition(":")[0] in D.ENGAGEMENT_WAITS:
        at = _engaged_at(key, run)
        if at is None or at >= deadline:
            return None
        return max(at, now)
    if rng.random() >= model.event_rate:
        return None
    return now + timedelta(seconds=rng.uniform(0, (deadline - now).total_seconds()))


def _engaged_at(key: str, run: _Run) -> datetime | None:
    """When the modelled reader did what an engagement wait's key waits for."""
    kind, _, rest = key.partition(":")
    step, _, link_text = rest.partition(":")
    sends = [v for (s, v) in run.engagement if s == step]
    if not sends:
        return None
    opened, clicked, link = run.engagement[(step, max(sends))]
    if kind == "clicked" and link_text and int(link_text) != link:
        return None
    return opened if kind == "opened" else clicked


def _decide(rule: A.Node, run: _Run, now: datetime, rng: random.Random, model: Model) -> bool:
    if isinstance(rule, A.And):
        return all(_decide(item, run, now, rng, model) for item in rule.items)
    if isinstance(rule, A.Or):
        return any(_decide(item, run, now, rng, model) for item in rule.items)
    if isinstance(rule, A.Not):
        return not _decide(rule.item, run, now, rng, model)
    if isinstance(rule, A.Engaged) and rule.step is not None:
        sends = [v for (s, v) in run.engagement if s == rule.step]
        if not sends:
            return False
        opened, clicked, link = run.engagement[(rule.step, max(sends))]
        if rule.kind == "opened":
            return opened is not None and opened <= now
        if rule.link is not None and rule.link != link:
            return False
        return clicked is not None and clicked <= now
    drawn = run.contact.attributes.get(rule)
    if drawn is None:
        drawn = rng.random() < model.attribute_rate
        run.contact.attributes[rule] = drawn
    return drawn


def _may_send(contact: _Contact, message_class: str, now: datetime, model: Model) -> bool:
    if message_class not in MARKETING_CLASSES:
        return True
    week_ago = now - timedelta(days=7)
    recent = sum(1 for at in contact.marketing_sent if at > week_ago)
    if recent >= model.marketing_per_week:
        return False
    # The machine sends whenever this says yes: count it now, so later steps of the same
    # run see it.
    contact.marketing_sent.append(now)
    return True
