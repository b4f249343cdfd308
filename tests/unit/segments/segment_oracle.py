"""The oracle: a plain per-contact evaluator that reads the raw records, fact payloads and
events one contact at a time, written to be obviously correct rather than fast. The
engine (numpy masks over the snapshot) must agree with it exactly.

It shares with the engine only the documented scalar semantics for attribute values
(`scalar_matches`, unit-tested on its own), the code groups and the stage rules
(`stage.classify`, itself checked against `classify_arrays` through this oracle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from carepost.segments import ast as A
from carepost.segments.evaluator import SegmentCycle, SegmentNotFound, scalar_matches
from carepost.segments.groups import CONDITION_GROUPS, MEDICATION_GROUPS, VACCINE_GROUPS, matches
from carepost.segments.stage import DEFAULT_RULES, StageRules, classify

DAY = 86_400


@dataclass
class Person:
    id: str
    record: dict[str, Any]
    facts: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, str | None, str, int]] = field(
        default_factory=list
    )  # kind, name, verdict, t


def ts(text: Any) -> int | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        if len(text) == 10:
            return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return math.floor(dt.timestamp())


def in_window(t: int | None, at: int, within: int | None) -> bool:
    if within is None:
        return t is None or t <= at
    return t is not None and at - within * DAY <= t <= at


def num_ok(x: float, op: str, value: Any) -> bool:
    if op == "between":
        return bool(value[0] <= x <= value[1])
    if op == "in":
        return any(x == v for v in value)
    if op == "not in":
        return all(x != v for v in value)
    return bool(
        {
            "==": x == value,
            "!=": x != value,
            "<": x < value,
            "<=": x <= value,
            ">": x > value,
            ">=": x >= value,
        }[op]
    )


def codings(p: dict[str, Any]) -> list[tuple[str | None, str]]:
    codes = p.get("codes") or ([p["code"]] if p.get("code") else [])
    return [
        (c.get("system"), str(c["code"])) for c in codes if isinstance(c, dict) and c.get("code")
    ]


def usable(p: dict[str, Any], kind: str) -> bool:
    return p.get("kind") == kind and p.get("status") not in (
        "entered-in-error",
        "not-done",
        "cancelled",
    )


def age_of(person: Person, at: datetime) -> int | None:
    born = person.record.get("birth_date")
    if not isinstance(born, str) or len(born) < 10:
        return None
    try:
        b = datetime.fromisoformat(born[:10])
    except ValueError:
        return None
    d = at.astimezone(UTC)
    return d.year - b.year - (1 if (b.month, b.day) > (d.month, d.day) else 0)


def stage_of(person: Person, at: int, rules: StageRules) -> str:
    visits = [
        t
        for p in person.facts
        if usable(p, "encounter") and p.get("status") != "planned"
        for t in [ts(p.get("date"))]
    ]
    visits_t = [t if t is not None else -(2**63) for t in visits]
    appts = [
        (
            ts(p.get("date")) if ts(p.get("date")) is not None else -(2**63),
            p.get("status"),
            bool(p.get("no_show") or p.get("status") == "noshow"),
        )
        for p in person.facts
        if usable(p, "appointment")
    ]
    return classify(visits_t, appts, at, rules)


def holds(node: A.Node, person: Person, at: datetime, ctx: dict[str, Any]) -> bool:
    t = math.floor(at.timestamp())
    if isinstance(node, A.And):
        return all(holds(i, person, at, ctx) for i in node.items)
    if isinstance(node, A.Or):
        return any(holds(i, person, at, ctx) for i in node.items)
    if isinstance(node, A.Not):
        return not holds(node.item, person, at, ctx)
    if isinstance(node, A.Compare):
        if node.attr == "age":
            age = age_of(person, at)
            return age is not None and num_ok(float(age), node.op, node.value)
        if node.attr == "stage":
            return scalar_matches(stage_of(person, t, ctx["rules"]), node.op, node.value)
        r = person.record
        address = r.get("address") or {}
        if node.attr.startswith("attr."):
            stored = (r.get("attributes") or {}).get(node.attr[5:])
        elif node.attr in ("state", "postal_code", "city"):
            stored = address.get(node.attr)
        else:
            stored = r.get(node.attr)
        if stored == "":
            stored = None
        return scalar_matches(stored, node.op, node.value)
    if isinstance(node, A.HasCondition):
        for p in person.facts:
            if not usable(p, "condition"):
                continue
            if p.get("status") in ("inactive", "remission", "resolved"):
                continue
            if p.get("verification") in ("refuted", "entered-in-error"):
                continue
            onset = ts(p.get("onset") or p.get("date"))
            end = ts(p.get("abatement"))
            if onset is not None and onset > t:
                continue
            if end is not None and end <= t:
                continue
            if any(
                matches(node.code, CONDITION_GROUPS, s, c, icd10_prefix=True) for s, c in codings(p)
            ):
                return True
        return False
    if isinstance(node, A.HasMedication):
        for p in person.facts:
            if not usable(p, "medication"):
                continue
            if not any(
                matches(node.code, MEDICATION_GROUPS, s, c, icd10_prefix=False)
                for s, c in codings(p)
            ):
                continue
            start, end = ts(p.get("date")), ts(p.get("end"))
            if node.within is not None:
                if in_window(start, t, node.within):
                    return True
                continue
            if p.get("status") not in (None, "active", "on-hold", "intended"):
                continue
            if (start is None or start <= t) and (end is None or end > t):
                return True
        return False
    if isinstance(node, A.Vaccinated | A.HadProcedure):
        kind = "immunization" if isinstance(node, A.Vaccinated) else "procedure"
        groups = VACCINE_GROUPS if kind == "immunization" else {}
        return any(
            usable(p, kind)
            and not p.get("not_done")
            and in_window(ts(p.get("date")), t, node.within)
            and any(matches(node.code, groups, s, c, icd10_prefix=False) for s, c in codings(p))
            for p in person.facts
        )
    if isinstance(node, A.Lab):
        best: tuple[int, float] | None = None
        for p in person.facts:
            if not usable(p, "observation"):
                continue
            v = p.get("value")
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                continue
            if not any(c == node.code for _, c in codings(p)):
                continue
            when = ts(p.get("date"))
            if not in_window(when, t, node.within):
                continue
            key = (when if when is not None else -(2**63), float(v))
            if best is None or key > best:
                best = key
        return best is not None and num_ok(best[1], node.op, node.value)
    if isinstance(node, A.Count):
        n = 0
        for p in person.facts:
            visit = node.kind == "visits" and usable(p, "encounter")
            no_show = node.kind == "no_shows" and usable(p, "appointment")
            if visit and p.get("status") == "planned":
                continue
            if no_show and not (p.get("no_show") or p.get("status") == "noshow"):
                continue
            if visit or no_show:
                n += in_window(ts(p.get("date")), t, node.within)
        return num_ok(float(n), node.op, node.value)
    if isinstance(node, A.Engaged):
        kind = {
            "opened": "open",
            "clicked": "click",
            "form_submitted": "form_submitted",
            "event_received": "api_event",
        }[node.kind]
        for ekind, name, verdict, when in person.events:
            if ekind != kind or not in_window(when, t, node.within):
                continue
            if node.name is not None and (name or "").casefold() != node.name.casefold():
                continue
            if node.humans_only and kind in ("open", "click") and verdict != "human":
                continue
            return True
        return False
    if isinstance(node, A.InSegment):
        stack: list[str] = ctx["stack"]
        if node.name in stack:
            raise SegmentCycle("cycle")
        definition = ctx["segments"].get(node.name)
        if definition is None:
            raise SegmentNotFound(node.name)
        if isinstance(definition, frozenset):
            return person.id in definition
        stack.append(node.name)
        try:
            return holds(definition, person, at, ctx) and not dead(person)
        finally:
            stack.pop()
    raise AssertionError(node)


def dead(person: Person) -> bool:
    d = person.record.get("deceased")
    return d is True or (isinstance(d, str) and bool(d))


def members(
    node: A.Node,
    people: list[Person],
    at: datetime,
    *,
    segments: dict[str, Any] | None = None,
    rules: StageRules = DEFAULT_RULES,
) -> set[str]:
    out = set()
    for person in people:
        ctx = {"segments": segments or {}, "stack": [], "rules": rules}
        if not dead(person) and holds(node, person, at, ctx):
            out.add(person.id)
    return out
