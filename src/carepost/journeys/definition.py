"""A journey's definition: what a document (YAML or JSON) says, checked completely before
anything runs. Pure: no database, no clock. `load(text)` returns a `Journey` or raises
`DefinitionError` listing every problem, each named by its place (`steps[2] (remind).send.
template`) and never quoting more than the offending name or value a staff member typed.

The shape, with defaults:

    name: refill-reminder
    trigger: {event: {name: refill_due}}      # or segment / date / inactivity / manual
    reentry: never                            # never | always | {after_days: N}
    max_steps: 100                            # per enrolment, loops included
    goal: {event: purchase}                   # optional: reaching it ends the enrolment
    steps:
      - id: remind
        send: {template: refill-reminder, class: treatment}
      - id: wait-click
        wait: {event: clicked, step: remind, timeout: 3d, on_timeout: fallback}
      - id: fallback
        send: {template: refill-fallback, class: treatment}

A step goes on to `next:` when given, else to the step after it; after the last step the
enrolment exits. `branch`, `goto`, `wait`'s `on_timeout` and `exit` name their own ways on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Literal

from carepost.consent.records import MESSAGE_CLASSES
from carepost.segments import ast as A
from carepost.segments.parser import parse as parse_rule

NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}\Z")
STEP_ID = A.STEP_ID
EVENT_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}(?::[A-Za-z0-9_.-]{1,64})?\Z")
DURATION = re.compile(r"([0-9]{1,6})(s|m|h|d|w)\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_STEPS_LIMIT = 1000
DEFAULT_MAX_STEPS = 100
# The journey's own engagement waits: a human open or click of a send step's message.
ENGAGEMENT_WAITS = ("opened", "clicked")
DATE_ATTRIBUTES = ("birthday", "last_visit", "next_appointment")
STEP_KINDS = (
    "send",
    "wait",
    "branch",
    "update_contact",
    "add_to_segment",
    "remove_from_segment",
    "goto",
    "start_journey",
    "webhook",
    "exit",
)


class DefinitionError(ValueError):
    """Every problem of a definition at once, each with its place."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        lines = [f"{where}: {what}" if where else what for where, what in self.problems]
        super().__init__("\n".join(lines))


# Triggers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentTrigger:
    """Enrol contacts that enter (or leave) the saved segment. The first scan after the
    journey is published takes the current members as the baseline: they have not
    "entered" unless `existing: true` says they count as entering on that scan."""

    segment: str
    on: Literal["enter", "leave"]
    existing: bool = False


@dataclass(frozen=True)
class EventTrigger:
    name: str  # form_submitted:<form>, list_signup, purchase, lab_result_available, any
    where: Mapping[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class DateTrigger:
    """`attribute` plus `offset_days` (negative: before), at `at` in the contact's zone."""

    attribute: str
    offset_days: int
    at: time


@dataclass(frozen=True)
class InactivityTrigger:
    days: int  # no human open or click for this many days


@dataclass(frozen=True)
class ManualTrigger:
    pass


Trigger = SegmentTrigger | EventTrigger | DateTrigger | InactivityTrigger | ManualTrigger


# Steps ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    template: str
    message_class: str


@dataclass(frozen=True)
class Wait:
    """Exactly one of: a duration; until an instant; until a time of day (contact's zone);
    until an event (a named event, or `opened`/`clicked` of `step`'s message) with a
    timeout that goes to `on_timeout`."""

    duration: timedelta | None = None
    until: datetime | None = None
    time_of_day: time | None = None
    event: str | None = None
    step: str | None = None
    link: int | None = None
    timeout: timedelta | None = None
    on_timeout: str | None = None


@dataclass(frozen=True)
class Branch:
    rule: A.Node
    then: str
    otherwise: str


@dataclass(frozen=True)
class UpdateContact:
    set: Mapping[str, str | int | float | bool | None]


@dataclass(frozen=True)
class SegmentChange:
    segment: str
    add: bool


@dataclass(frozen=True)
class Goto:
    step: str


@dataclass(frozen=True)
class StartJourney:
    journey: str


@dataclass(frozen=True)
class Webhook:
    """POST ids (enrolment, contact, journey, step) to `url`, signed; retried with backoff
    a bounded number of times, then on to `on_failure` (or exit `webhook_failed`)."""

    url: str
    timeout: timedelta
    on_failure: str | None = None


@dataclass(frozen=True)
class Exit:
    pass


Action = Send | Wait | Branch | UpdateContact | SegmentChange | Goto | StartJourney | Webhook | Exit


@dataclass(frozen=True)
class Step:
    id: str
    action: Action
    next: str | None  # where it goes on; None after the last step: exit
    allow_revisit: bool = False


@dataclass(frozen=True)
class Journey:
    name: str
    trigger: Trigger
    steps: tuple[Step, ...]
    reentry: Literal["never", "always", "after"] = "never"
    reentry_after_days: int | None = None
    max_steps: int = DEFAULT_MAX_STEPS
    goal_event: str | None = None
    description: str = ""

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def exits_from(self, step: Step) -> tuple[str, ...]:
        """The steps this step can go on to (for reachability and reports)."""
        action = step.action
        if isinstance(action, Branch):
            return (action.then, action.otherwise)
        if isinstance(action, Goto):
            return (action.step,)
        if isinstance(action, Exit):
            return ()
        out = [step.next] if step.next else []
        if isinstance(action, Wait) and action.on_timeout:
            out.append(action.on_timeout)
        if isinstance(action, Webhook) and action.on_failure:
            out.append(action.on_failure)
        return tuple(out)


# Checking ------------------------------------------------------------------------------


def parse_duration(text: object) -> timedelta:
    if not isinstance(text, str) or not (m := DURATION.match(text.strip())):
        raise ValueError("a duration like 30s, 15m, 2h, 3d or 2w")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise ValueError("a duration longer than zero")
    return timedelta(seconds=seconds)


def _time_of_day(text: object) -> time:
    if not isinstance(text, str) or not re.fullmatch(r"[0-2][0-9]:[0-5][0-9]", text):
        raise ValueError("a time of day like 09:00")
    hour, minute = int(text[:2]), int(text[3:])
    if hour > 23:
        raise ValueError("a time of day like 09:00")
    return time(hour, minute)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def bad(self, where: str, what: str) -> None:
        self.problems.append((where, what))

    def mapping(self, value: object, where: str) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.bad(where, "must be a mapping")
            return None
        return value

    def only(self, doc: Mapping[str, Any], where: str, allowed: Sequence[str]) -> None:
        for key in doc:
            if key not in allowed:
                self.bad(f"{where}.{key}" if where else str(key), _unknown_key(allowed))

    def name(self, value: object, where: str, what: str = "a name") -> str:
        if not isinstance(value, str) or not NAME.match(value):
            self.bad(where, f"{what}: lower-case letters, digits, - and _, up to 64")
            return ""
        return value

    def whole(self, value: object, where: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.bad(where, f"a whole number from {lo} to {hi}")
            return lo
        return value


def _unknown_key(allowed: Sequence[str]) -> str:
    return f"unknown key (expected one of: {', '.join(allowed)})"


_TOP_KEYS = ("name", "description", "trigger", "reentry", "max_steps", "goal", "steps")
_STEP_COMMON = ("id", "next", "allow_revisit")


def check(doc: object) -> Journey:
    """The journey a parsed document describes, or DefinitionError with every problem."""
    c = _Checker()
    top = c.mapping(doc, "(document)")
    if top is None:
        raise DefinitionError(c.problems)
    c.only(top, "", _TOP_KEYS)
    name = c.name(top.get("name"), "name", "the journey's name")
    description = top.get("description", "")
    if not isinstance(description, str) or len(description) > 1000:
        c.bad("description", "text of at most 1000 characters")
        description = ""
    trigger = _trigger(c, top.get("trigger"))
    reentry, after = _reentry(c, top.get("reentry", "never"))
    max_steps = c.whole(top.get("max_steps", DEFAULT_MAX_STEPS), "max_steps", 1, MAX_STEPS_LIMIT)
    goal = None
    if "goal" in top:
        goal_doc = c.mapping(top["goal"], "goal")
        if goal_doc is not None:
            c.only(goal_doc, "goal", ("event",))
            goal = _event_name(c, goal_doc.get("event"), "goal.event")
    steps = _steps(c, top.get("steps"))
    if not c.problems:
        _check_graph(c, steps)
    if c.problems:
        raise DefinitionError(c.problems)
    assert trigger is not None  # a missing trigger was recorded as a problem above
    return Journey(
        name=name,
        trigger=trigger,
        steps=tuple(steps),
        reentry=reentry,
        reentry_after_days=after,
        max_steps=max_steps,
        goal_event=goal,
        description=description,
    )


def _event_name(c: _Checker, value: object, where: str) -> str:
    if not isinstance(value, str) or not EVENT_NAME.match(value):
        c.bad(where, "an event name like purchase or form_submitted:newsletter")
        return ""
    return value


_TRIGGERS = ("segment", "event", "date", "inactivity", "manual")


def _trigger(c: _Checker, value: object) -> Trigger | None:
    doc = c.mapping(value, "trigger")
    if doc is None:
        return None
    kinds = [k for k in doc if k in _TRIGGERS]
    c.only(doc, "trigger", _TRIGGERS)
    if len(kinds) != 1:
        c.bad("trigger", f"exactly one of: {', '.join(_TRIGGERS)}")
        return None
    kind = kinds[0]
    where = f"trigger.{kind}"
    body = doc[kind]
    if kind == "manual":
        if body not in (None, {}, True):
            c.bad(where, "takes nothing (write manual: {})")
        return ManualTrigger()
    spec = c.mapping(body, where)
    if spec is None:
        return None
    if kind == "segment":
        c.only(spec, where, ("name", "on", "existing"))
        on = spec.get("on", "enter")
        if on not in ("enter", "leave"):
            c.bad(f"{where}.on", "enter or leave")
            on = "enter"
        existing = spec.get("existing", False)
        if not isinstance(existing, bool):
            c.bad(f"{where}.existing", "true or false")
            existing = False
        elif existing and on == "leave":
            c.bad(f"{where}.existing", "only an enter trigger can count existing members")
        segment = c.name(spec.get("name"), f"{where}.name", "a segment name")
        return SegmentTrigger(segment, on, existing)
    if kind == "event":
        c.only(spec, where, ("name", "where"))
        event = _event_name(c, spec.get("name"), f"{where}.name")
        props: dict[str, str | int | float | bool] = {}
        if "where" in spec:
            cond = c.mapping(spec["where"], f"{where}.where")
            for key, val in (cond or {}).items():
                if not isinstance(key, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", key):
                    c.bad(f"{where}.where", "property names are lower-case identifiers")
                elif not isinstance(val, str | int | float | bool):
                    c.bad(f"{where}.where.{key}", "a text, number or true/false value")
                else:
                    props[key] = val
        return EventTrigger(event, props)
    if kind == "date":
        c.only(spec, where, ("attribute", "offset_days", "at"))
        attribute = spec.get("attribute")
        custom = isinstance(attribute, str) and attribute.startswith(A.CUSTOM_PREFIX)
        if not (attribute in DATE_ATTRIBUTES or custom):
            c.bad(
                f"{where}.attribute",
                f"one of {', '.join(DATE_ATTRIBUTES)} or attr.<name> (a date attribute)",
            )
        offset = c.whole(spec.get("offset_days", 0), f"{where}.offset_days", -3650, 3650)
        try:
            at = _time_of_day(spec.get("at", "09:00"))
        except ValueError as exc:
            c.bad(f"{where}.at", str(exc))
            at = time(9)
        return DateTrigger(str(attribute), offset, at)
    c.only(spec, where, ("days",))
    return InactivityTrigger(c.whole(spec.get("days"), f"{where}.days", 1, 3650))


def _reentry(c: _Checker, value: object) -> tuple[Literal["never", "always", "after"], int | None]:
    if value in ("never", "always"):
        return value, None
    if isinstance(value, Mapping) and set(value) == {"after_days"}:
        return "after", c.whole(value["after_days"], "reentry.after_days", 1, 3650)
    c.bad("reentry", "never, always, or {after_days: N}")
    return "never", None


def _steps(c: _Checker, value: object) -> list[Step]:
    if not isinstance(value, list) or not value:
        c.bad("steps", "a list of at least one step")
        return []
    steps: list[Step] = []
    for i, raw in enumerate(value):
        label = f"steps[{i}]"
        doc = c.mapping(raw, label)
        if doc is None:
            continue
        step_id = doc.get("id")
        if not isinstance(step_id, str) or not STEP_ID.match(step_id):
            c.bad(f"{label}.id", "a step id: a letter, then letters, digits, - and _ (up to 64)")
            step_id = f"#{i}"
        else:
            label = f"steps[{i}] ({step_id})"
        kinds = [k for k in doc if k in STEP_KINDS]
        c.only(doc, label, (*_STEP_COMMON, *STEP_KINDS))
        if len(kinds) != 1:
            c.bad(label, f"exactly one step type of: {', '.join(STEP_KINDS)}")
            continue
        nxt = doc.get("next")
        if nxt is not None and (not isinstance(nxt, str) or not STEP_ID.match(nxt)):
            c.bad(f"{label}.next", "a step id")
            nxt = None
        revisit = doc.get("allow_revisit", False)
        if not isinstance(revisit, bool):
            c.bad(f"{label}.allow_revisit", "true or false")
            revisit = False
        action = _action(c, kinds[0], doc[kinds[0]], f"{label}.{kinds[0]}")
        if action is None:
            continue
        if isinstance(action, Branch | Goto | Exit) and nxt is not None:
            c.bad(f"{label}.next", f"a {kinds[0]} step names its own way on; drop next")
        steps.append(Step(step_id, action, nxt, revisit))
    # `next` defaults to the following step: filled in once all ids are known.
    filled: list[Step] = []
    for i, step in enumerate(steps):
        if step.next is None and not isinstance(step.action, Branch | Goto | Exit):
            following = steps[i + 1].id if i + 1 < len(steps) else None
            step = Step(step.id, step.action, following, step.allow_revisit)
        filled.append(step)
    return filled


def _action(c: _Checker, kind: str, value: object, where: str) -> Action | None:
    if kind == "exit":
        if value not in (None, {}, True):
            c.bad(where, "takes nothing (write exit: {})")
        return Exit()
    doc = c.mapping(value, where)
    if doc is None:
        return None
    if kind == "send":
        c.only(doc, where, ("template", "class"))
        template = c.name(doc.get("template"), f"{where}.template", "a template name")
        message_class = doc.get("class")
        if message_class not in MESSAGE_CLASSES:
            c.bad(f"{where}.class", f"one of {', '.join(MESSAGE_CLASSES)}")
            message_class = ""
        return Send(template, str(message_class))
    if kind == "wait":
        return _wait(c, doc, where)
    if kind == "branch":
        c.only(doc, where, ("rule", "then", "else"))
        rule: A.Node | None = None
        text = doc.get("rule")
        if not isinstance(text, str):
            c.bad(f"{where}.rule", "a rule in the segment language")
        else:
            try:
                rule = parse_rule(text)
            except A.RuleError as exc:
                c.bad(f"{where}.rule", str(exc))
        then, otherwise = doc.get("then"), doc.get("else")
        for key, target in (("then", then), ("else", otherwise)):
            if not isinstance(target, str) or not STEP_ID.match(target):
                c.bad(f"{where}.{key}", "a step id")
        if rule is None or not isinstance(then, str) or not isinstance(otherwise, str):
            return None
        return Branch(rule, then, otherwise)
    if kind == "update_contact":
        c.only(doc, where, ("set",))
        values = c.mapping(doc.get("set"), f"{where}.set")
        if not values:
            if values is not None:
                c.bad(f"{where}.set", "at least one attribute")
            return None
        for key, val in values.items():
            if not isinstance(key, str) or not key.startswith(A.CUSTOM_PREFIX):
                c.bad(f"{where}.set", "only custom attributes (attr.<name>) are set by journeys")
            elif not A.IDENT.match(key[len(A.CUSTOM_PREFIX) :]):
                c.bad(f"{where}.set", "attr.<name> with a name of letters, digits and _")
            elif val is not None and not isinstance(val, str | int | float | bool):
                c.bad(f"{where}.set.{key}", "a text, number, true/false or null value")
        return UpdateContact(dict(values))
    if kind in ("add_to_segment", "remove_from_segment"):
        c.only(doc, where, ("segment",))
        segment = c.name(doc.get("segment"), f"{where}.segment", "a static list's name")
        return SegmentChange(segment, kind == "add_to_segment")
    if kind == "goto":
        c.only(doc, where, ("step",))
        target = doc.get("step")
        if not isinstance(target, str) or not STEP_ID.match(target):
            c.bad(f"{where}.step", "a step id")
            return None
        return Goto(target)
    if kind == "start_journey":
        c.only(doc, where, ("journey",))
        return StartJourney(c.name(doc.get("journey"), f"{where}.journey", "a journey name"))
    c.only(doc, where, ("url", "timeout", "on_failure"))
    url = doc.get("url")
    if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s#]*)?", url):
        # The address itself is checked against loopback, private and metadata ranges
        # when the step runs (names resolve then), not here.
        c.bad(f"{where}.url", "an http(s) URL without credentials")
        url = ""
    try:
        timeout = parse_duration(doc.get("timeout", "10s"))
        if timeout > timedelta(seconds=60):
            c.bad(f"{where}.timeout", "at most 60s")
    except ValueError as exc:
        c.bad(f"{where}.timeout", str(exc))
        timeout = timedelta(seconds=10)
    on_failure = doc.get("on_failure")
    if on_failure is not None and (
        not isinstance(on_failure, str) or not STEP_ID.match(on_failure)
    ):
        c.bad(f"{where}.on_failure", "a step id")
        on_failure = None
    return Webhook(url, timeout, on_failure)


_WAIT_FORMS = ("duration", "until", "time_of_day", "event")


def _wait(c: _Checker, doc: Mapping[str, Any], where: str) -> Wait | None:
    c.only(doc, where, (*_WAIT_FORMS, "step", "link", "timeout", "on_timeout"))
    forms = [k for k in _WAIT_FORMS if k in doc]
    if len(forms) != 1:
        c.bad(where, f"exactly one of: {', '.join(_WAIT_FORMS)}")
        return None
    form = forms[0]
    if form != "event":
        for extra in ("step", "link", "timeout", "on_timeout"):
            if extra in doc:
                c.bad(f"{where}.{extra}", "only a wait for an event takes this")
    try:
        if form == "duration":
            return Wait(duration=parse_duration(doc["duration"]))
        if form == "time_of_day":
            return Wait(time_of_day=_time_of_day(doc["time_of_day"]))
        if form == "until":
            return Wait(until=_instant(doc["until"]))
    except ValueError as exc:
        c.bad(f"{where}.{form}", str(exc))
        return None
    event = doc["event"]
    step = doc.get("step")
    link = doc.get("link")
    if event in ENGAGEMENT_WAITS:
        if not isinstance(step, str) or not STEP_ID.match(step):
            c.bad(f"{where}.step", f"waiting for {event} needs the send step whose message counts")
        if link is not None and (event != "clicked" or isinstance(link, bool)):
            c.bad(f"{where}.link", "only a wait for clicked takes a link index")
        elif link is not None and (not isinstance(link, int) or not 0 <= link <= 9999):
            c.bad(f"{where}.link", "a link index from 0 to 9999")
    else:
        _event_name(c, event, f"{where}.event")
        for extra in ("step", "link"):
            if extra in doc:
                c.bad(f"{where}.{extra}", "only opened and clicked waits take this")
    on_timeout = doc.get("on_timeout")
    if "timeout" not in doc:
        c.bad(f"{where}.timeout", "a wait for an event needs a timeout (e.g. 7d)")
        return None
    try:
        timeout = parse_duration(doc["timeout"])
    except ValueError as exc:
        c.bad(f"{where}.timeout", str(exc))
        return None
    if on_timeout is not None and (
        not isinstance(on_timeout, str) or not STEP_ID.match(on_timeout)
    ):
        c.bad(f"{where}.on_timeout", "a step id")
        on_timeout = None
    return Wait(
        event=str(event),
        step=step if isinstance(step, str) else None,
        link=link if isinstance(link, int) and not isinstance(link, bool) else None,
        timeout=timeout,
        on_timeout=on_timeout,
    )


def _instant(value: object) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                "an ISO 8601 instant with its offset, e.g. 2027-01-05T09:00Z"
            ) from None
    else:
        raise ValueError("an ISO 8601 instant with its offset, e.g. 2027-01-05T09:00Z")
    if parsed.tzinfo is None:
        raise ValueError("an instant needs its UTC offset (e.g. Z or +01:00)")
    return parsed


def _check_graph(c: _Checker, steps: Sequence[Step]) -> None:
    """Ids unique, every reference resolves, every step reachable from the first, and
    every send step a journey predicate names exists and is a send."""
    index: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.id in index:
            c.bad(f"steps[{i}].id", f"{step.id!r} is already steps[{index[step.id]}]'s id")
        else:
            index[step.id] = i
    sends = {s.id for s in steps if isinstance(s.action, Send)}

    def label(step: Step) -> str:
        return f"steps[{index[step.id]}] ({step.id})"

    for step in steps:
        action = step.action
        refs: list[tuple[str, str]] = []
        if step.next is not None:
            refs.append(("next", step.next))
        if isinstance(action, Branch):
            refs += [("branch.then", action.then), ("branch.else", action.otherwise)]
            for pred in A.journey_predicates(action.rule):
                if pred.step not in sends:
                    c.bad(f"{label(step)}.branch.rule", f"step {pred.step!r} is not a send step")
        if isinstance(action, Goto):
            refs.append(("goto.step", action.step))
        if isinstance(action, Webhook) and action.on_failure is not None:
            refs.append(("webhook.on_failure", action.on_failure))
        if isinstance(action, Wait):
            if action.on_timeout is not None:
                refs.append(("wait.on_timeout", action.on_timeout))
            if action.step is not None and action.step not in sends:
                c.bad(f"{label(step)}.wait.step", f"step {action.step!r} is not a send step")
        for where, target in refs:
            if target not in index:
                c.bad(f"{label(step)}.{where}", f"no step with id {target!r}")
    if c.problems:
        return
    journey_like = Journey("x", ManualTrigger(), tuple(steps))
    seen = {steps[0].id}
    todo = [steps[0]]
    while todo:
        for target in journey_like.exits_from(todo.pop()):
            if target not in seen:
                seen.add(target)
                todo.append(steps[index[target]])
    for step in steps:
        if step.id not in seen:
            c.bad(label(step), "no way leads to this step from the first step")
