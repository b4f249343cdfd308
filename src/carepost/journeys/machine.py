"""The step machine: where one enrolment goes next, and what that asks the world to do.

Pure (no database, no clock, no I/O): `run(journey, state, now, world)` takes the state
of one enrolment, runs steps until the enrolment must wait or ends, and returns the new
state with the effects to carry out (messages to send, contacts to update, journeys to
start, webhooks to call). The database engine and `carepost journey simulate` drive the
same machine, so a dry run takes exactly the paths a real run would.

Guards, checked before each step: a step already visited in this enrolment is not run
again unless it says `allow_revisit` (the enrolment exits with `loop_guard`), and an
enrolment takes at most `max_steps` steps (`step_limit`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta, tzinfo
from typing import Literal

from carepost.journeys import definition as D
from carepost.segments import ast as A

# calling: at a webhook step, between two transactions (the engine calls it outside any).
Status = Literal["active", "waiting", "calling", "exited"]


@dataclass(frozen=True)
class Enrolment:
    """One contact's way through one journey version. `visits` counts step visits: the
    key of a send's outbox row is (enrolment, visit), so a re-run step after a crash
    finds its message already written instead of sending a second one."""

    contact_id: str
    step: str | None  # the step to run next (or being waited in); None once exited
    status: Status = "active"
    visited: frozenset[str] = frozenset()
    visits: int = 0
    wake_at: datetime | None = None  # a timed wait's end, or an event wait's timeout
    waiting_for: str | None = None  # an event name, or opened/clicked of a send step
    exit_reason: str | None = None  # completed | exit_step | goal | loop_guard | step_limit
    sent: tuple[tuple[str, int], ...] = ()  # (send step id, visit) of this enrolment


@dataclass(frozen=True)
class SendEffect:
    step: str
    visit: int
    template: str
    message_class: str


@dataclass(frozen=True)
class UpdateEffect:
    step: str
    values: dict[str, str | int | float | bool | None]


@dataclass(frozen=True)
class SegmentEffect:
    step: str
    segment: str
    add: bool


@dataclass(frozen=True)
class StartJourneyEffect:
    step: str
    journey: str


@dataclass(frozen=True)
class WebhookEffect:
    step: str
    visit: int
    url: str
    timeout: timedelta


Effect = SendEffect | UpdateEffect | SegmentEffect | StartJourneyEffect | WebhookEffect


@dataclass(frozen=True)
class Transition:
    """One step taken: what the per-step funnel and `journey explain` are made of."""

    step: str
    outcome: str  # sent, waited, branched_then, branched_else, updated, exited, ...
    detail: str = ""


@dataclass
class World:
    """What the machine may ask about the contact: `decide` evaluates a branch rule (with
    the enrolment, for journey predicates) and `zone` is the contact's time zone."""

    decide: Callable[[A.Node, Enrolment], bool]
    zone: Callable[[str], tzinfo]
    # Frequency cap: False refuses a marketing send (the step is skipped, not retried).
    may_send: Callable[[str, str], bool] = field(default=lambda contact, cls: True)
    # The durable engine calls webhooks outside its transaction: the run stops at one
    # (status calling) and `after_call` goes on. The dry run takes every call as made.
    stop_at_webhook: bool = False
    # Told of each update_contact, so a later branch in the same run sees the new values.
    updated: Callable[[str, Mapping[str, object]], None] = field(
        default=lambda contact, values: None
    )
    # Whether the open or click an engagement wait waits for (its `waiting_key`) has
    # already happened: a wait entered after the reader acted is passed at once.
    engaged: Callable[[Enrolment, str], bool] = field(default=lambda state, key: False)


@dataclass(frozen=True)
class Result:
    state: Enrolment
    effects: tuple[Effect, ...]
    transitions: tuple[Transition, ...]


def start(journey: D.Journey, contact_id: str) -> Enrolment:
    return Enrolment(contact_id=contact_id, step=journey.steps[0].id)


def run(journey: D.Journey, state: Enrolment, now: datetime, world: World) -> Result:
    """Run from `state.step` until the enrolment waits or exits. A waiting enrolment whose
    wake time has not come stays as it is."""
    effects: list[Effect] = []
    transitions: list[Transition] = []
    if state.status == "exited":
        return Result(state, (), ())
    if state.status == "waiting":
        if state.wake_at is None or now < state.wake_at:
            return Result(state, (), ())
        state = _wake(journey, state, timed_out=state.waiting_for is not None, out=transitions)
    while state.status == "active" and state.step is not None:
        state = _step(journey, state, now, world, effects, transitions)
    return Result(state, tuple(effects), tuple(transitions))


def deliver_event(journey: D.Journey, state: Enrolment, event: str, now: datetime) -> Enrolment:
    """An awaited event arrived: the wait ends and the enrolment goes on (by `run`). The
    caller matches the event to the enrolment exactly once (the engine does it by a
    conditional update on the waiting row)."""
    if state.status != "waiting" or state.waiting_for != event:
        return state
    step = journey.step(state.step or "")
    if step.next is None:
        return _exit(state, "completed")
    return replace(state, status="active", step=step.next, wake_at=None, waiting_for=None)


def after_call(journey: D.Journey, state: Enrolment, ok: bool) -> Enrolment:
    """A webhook step's call ended: on to the next step, or (it failed for good) to
    `on_failure`, else the enrolment exits with `webhook_failed`."""
    step = journey.step(state.step or "")
    action = step.action
    assert isinstance(action, D.Webhook)  # only webhook steps make an enrolment call
    target = step.next if ok else action.on_failure
    if target is None:
        return _exit(state, "completed" if ok else "webhook_failed")
    return replace(state, status="active", step=target, wake_at=None, waiting_for=None)


def waiting_key(action: D.Wait) -> str | None:
    """What an event wait waits for, as the engine indexes it: a named event, or
    `opened:<step>` / `clicked:<step>[:<link>]` for the journey's own messages."""
    if action.event is None:
        return None
    if action.event in D.ENGAGEMENT_WAITS:
        key = f"{action.event}:{action.step}"
        return f"{key}:{action.link}" if action.link is not None else key
    return action.event


def _wake(
    journey: D.Journey, state: Enrolment, *, timed_out: bool, out: list[Transition]
) -> Enrolment:
    step = journey.step(state.step or "")
    action = step.action
    assert isinstance(action, D.Wait)  # only wait steps put an enrolment to sleep
    if timed_out:
        out.append(Transition(step.id, "timed_out"))
        target = action.on_timeout or step.next
    else:
        out.append(Transition(step.id, "woke"))
        target = step.next
    if target is None:
        return _exit(state, "completed")
    return replace(state, status="active", step=target, wake_at=None, waiting_for=None)


def _exit(state: Enrolment, reason: str) -> Enrolment:
    return replace(
        state, status="exited", step=None, wake_at=None, waiting_for=None, exit_reason=reason
    )


def _step(
    journey: D.Journey,
    state: Enrolment,
    now: datetime,
    world: World,
    effects: list[Effect],
    transitions: list[Transition],
) -> Enrolment:
    step = journey.step(state.step or "")
    if step.id in state.visited and not step.allow_revisit:
        transitions.append(Transition(step.id, "exited", "loop_guard"))
        return _exit(state, "loop_guard")
    if state.visits >= journey.max_steps:
        transitions.append(Transition(step.id, "exited", "step_limit"))
        return _exit(state, "step_limit")
    visit = state.visits + 1
    state = replace(state, visited=state.visited | {step.id}, visits=visit)
    action = step.action
    go = step.next
    if isinstance(action, D.Send):
        if world.may_send(state.contact_id, action.message_class):
            effects.append(SendEffect(step.id, visit, action.template, action.message_class))
            state = replace(state, sent=(*state.sent, (step.id, visit)))
            transitions.append(Transition(step.id, "sent"))
        else:
            transitions.append(Transition(step.id, "skipped", "frequency_cap"))
    elif isinstance(action, D.Wait):
        return _wait(step, action, state, now, world, transitions)
    elif isinstance(action, D.Branch):
        taken = world.decide(action.rule, state)
        transitions.append(Transition(step.id, "branched_then" if taken else "branched_else"))
        go = action.then if taken else action.otherwise
    elif isinstance(action, D.UpdateContact):
        effects.append(UpdateEffect(step.id, dict(action.set)))
        transitions.append(Transition(step.id, "updated"))
        world.updated(state.contact_id, action.set)
    elif isinstance(action, D.SegmentChange):
        effects.append(SegmentEffect(step.id, action.segment, action.add))
        transitions.append(Transition(step.id, "added" if action.add else "removed"))
    elif isinstance(action, D.Goto):
        transitions.append(Transition(step.id, "jumped", action.step))
        go = action.step
    elif isinstance(action, D.StartJourney):
        effects.append(StartJourneyEffect(step.id, action.journey))
        transitions.append(Transition(step.id, "started_journey", action.journey))
    elif isinstance(action, D.Webhook):
        effects.append(WebhookEffect(step.id, visit, action.url, action.timeout))
        if world.stop_at_webhook:
            transitions.append(Transition(step.id, "calling"))
            return replace(state, status="calling", wake_at=now, waiting_for=None)
        transitions.append(Transition(step.id, "called"))
    else:
        transitions.append(Transition(step.id, "exited", "exit_step"))
        return _exit(state, "exit_step")
    if go is None:
        return _exit(state, "completed")
    return replace(state, step=go)


def _wait(
    step: D.Step,
    action: D.Wait,
    state: Enrolment,
    now: datetime,
    world: World,
    transitions: list[Transition],
) -> Enrolment:
    if action.event is not None:
        assert action.timeout is not None  # the definition requires it
        key = waiting_key(action) or ""
        transitions.append(Transition(step.id, "waiting", key))
        if action.event in D.ENGAGEMENT_WAITS and world.engaged(state, key):
            # The engine wakes waits on events that arrive while they wait; an open that
            # came earlier (during a timer before this step) would never arrive again.
            transitions.append(Transition(step.id, "woke", "already"))
            return replace(state, step=step.next) if step.next else _exit(state, "completed")
        return replace(state, status="waiting", wake_at=now + action.timeout, waiting_for=key)
    if action.duration is not None:
        wake = now + action.duration
    elif action.until is not None:
        wake = action.until
    else:
        assert action.time_of_day is not None
        wake = next_time_of_day(now, action.time_of_day, world.zone(state.contact_id))
    transitions.append(Transition(step.id, "waiting", "timer"))
    if wake <= now:
        return replace(state, step=step.next) if step.next else _exit(state, "completed")
    return replace(state, status="waiting", wake_at=wake, waiting_for=None)


def next_time_of_day(now: datetime, at: time, zone: tzinfo) -> datetime:
    """The next instant after `now` when the contact's clock shows `at` (a time that a
    daylight-saving jump skips is taken at the same offset as the day before it)."""
    local = now.astimezone(zone)
    candidate = local.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    if candidate <= local:
        candidate = (local + timedelta(days=1)).replace(
            hour=at.hour, minute=at.minute, second=0, microsecond=0
        )
    return candidate.astimezone(now.tzinfo)
