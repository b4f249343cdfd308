"""The pure core: evaluate a rule (AST) over a snapshot at time `at`.

No database, no clock: the same tree, snapshot and `at` always give the same members.
Every predicate becomes a numpy boolean mask over the snapshot's contact rows; `and`,
`or` and `not` combine masks. numpy rather than polars, by measurement (docs/benchmarks.md,
"Segments"): the hot operations are lookups of small per-vocabulary truth tables
(`table[codes]`), scatters of fact rows into a contact mask and `bincount`, which numpy
does in a few milliseconds per million rows without a dataframe layer.

Semantics, stated once (the oracle in tests/unit/segments implements the same):
- A comparison with a missing value is false, whatever the operator; `not` is the plain
  complement, so `not age >= 50` includes contacts without a date of birth.
- Text compares case-insensitively. Custom attributes compare as numbers when the literal
  is a number and the stored value is a number or numeric text; as booleans for true/false.
- `within Nd` means `at - N days <= t <= at`, to the second. Without a window, anything
  dated on or before `at` (or undated) counts.
- Age is whole years from the date of birth to `at` (UTC calendar date).
- Contacts marked deceased, and contacts shredded or deleted, are never members.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from carepost.segments import ast as A
from carepost.segments.ast import RuleError
from carepost.segments.groups import (
    CONDITION_GROUPS,
    MEDICATION_GROUPS,
    VACCINE_GROUPS,
    code_matcher,
)
from carepost.segments.snapshot import (
    BOOKED_BIT,
    EVENT_KINDS,
    NO_SHOW_BIT,
    VERDICTS,
    FactTable,
    Snapshot,
)
from carepost.segments.stage import (
    DAY,
    DEFAULT_RULES,
    STAGES,
    StageRules,
    classify_arrays_until,
    visit_bounds,
)

B = npt.NDArray[np.bool_]
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
ENGAGEMENT_EVENT = {
    "opened": "open",
    "clicked": "click",
    "form_submitted": "form_submitted",
    "event_received": "api_event",
}

# A segment reference resolves to a rule (dynamic segment) or to explicit contact ids.
SegmentDef = A.Node | frozenset[str]
Segments = Mapping[str, SegmentDef]


class SegmentNotFound(RuleError):
    pass


class SegmentCycle(RuleError):
    pass


def epoch_of(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError("naive datetime: evaluation time must be aware (UTC)")
    return math.floor(at.timestamp())


# --- scalar semantics (shared by the vocabularies and by `explain`) --------------------
def _as_number(stored: object) -> float | None:
    if isinstance(stored, bool):
        return None
    if isinstance(stored, int | float):
        return float(stored) if math.isfinite(stored) else None
    if isinstance(stored, str):
        try:
            value = float(stored.strip())
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    return None


def _as_bool(stored: object) -> bool | None:
    if isinstance(stored, bool):
        return stored
    if isinstance(stored, str):
        return {"true": True, "false": False}.get(stored.strip().casefold())
    return None


def compare_scalar(stored: object, op: str, literal: A.Scalar) -> bool:
    a: Any
    b: Any
    if stored is None:
        return False
    if isinstance(literal, bool):
        a, b = _as_bool(stored), literal
    elif isinstance(literal, int | float):
        a, b = _as_number(stored), float(literal)
    else:
        a = stored.casefold() if isinstance(stored, str) else None
        b = literal.casefold()
    if a is None:
        return False
    return OPS[op](a, b)


def scalar_matches(stored: object, op: str, value: A.Scalar | tuple[A.Scalar, ...]) -> bool:
    """Does one stored value satisfy `op value`? Missing (None) never does."""
    if stored is None:
        return False
    if op in ("in", "not in"):
        assert isinstance(value, tuple)
        comparable = [
            v for v in value if compare_scalar(stored, "==", v) or compare_scalar(stored, "!=", v)
        ]
        if not comparable:
            return False
        hit = any(compare_scalar(stored, "==", v) for v in comparable)
        return hit if op == "in" else not hit
    if op == "starts_with":
        assert isinstance(value, tuple)
        return isinstance(stored, str) and any(
            stored.casefold().startswith(str(v).casefold()) for v in value
        )
    if op == "between":
        assert isinstance(value, tuple)
        return compare_scalar(stored, ">=", value[0]) and compare_scalar(stored, "<=", value[1])
    assert not isinstance(value, tuple)
    return compare_scalar(stored, op, value)


def number_matches(x: float, op: str, value: object) -> bool:
    if op == "between":
        assert isinstance(value, tuple)
        return bool(value[0] <= x <= value[1])
    return OPS[op](x, value)


def age_at(birth_y: int, birth_md: int, at: datetime) -> int | None:
    if birth_y == 0:
        return None
    d = at.astimezone(UTC)
    return d.year - birth_y - (1 if birth_md > d.month * 100 + d.day else 0)


# --- evaluation -----------------------------------------------------------------------
@dataclass
class Context:
    snap: Snapshot
    at: datetime
    t: int
    segments: Segments
    rules: StageRules
    stack: list[str] = field(default_factory=list)


def _numbers_mask(x: npt.NDArray[Any], op: str, value: object) -> B:
    if op == "between":
        assert isinstance(value, tuple)
        return (x >= value[0]) & (x <= value[1])  # type: ignore[no-any-return]
    if op in ("in", "not in"):
        assert isinstance(value, tuple)
        hit = np.isin(x, np.asarray([float(v) for v in value]))
        return hit if op == "in" else ~hit
    return OPS[op](x, value)  # type: ignore[return-value]


def _vocab_mask(
    codes: npt.NDArray[np.int32] | npt.NDArray[np.int8],
    values: list[Any],
    pred: Callable[[Any], bool],
) -> B:
    table = np.zeros(len(values) + 1, dtype=bool)  # last slot: NO_CODE (-1) -> False
    for i, v in enumerate(values):
        table[i] = pred(v)
    return table[codes]


def _rows_mask(n: int, rows: npt.NDArray[np.int32]) -> B:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return mask


def _window(t: npt.NDArray[np.int64], at: int, within: int | None) -> B:
    if within is None:
        return t <= at
    return (t >= at - within * DAY) & (t <= at)


NO_GROUPS: dict[str, Any] = {}
GROUP_KINDS = {
    id(CONDITION_GROUPS): "condition",
    id(MEDICATION_GROUPS): "medication",
    id(VACCINE_GROUPS): "vaccine",
    id(NO_GROUPS): "none",
}


def _code_table(snap: Snapshot, arg: str, groups: Mapping[str, Any], icd10_prefix: bool) -> B:
    key = ("codes", arg, GROUP_KINDS[id(groups)], icd10_prefix, len(snap.codes))
    cached = snap.cache.get(key)
    if cached is None:
        match = code_matcher(arg, groups, icd10_prefix=icd10_prefix)
        cached = np.zeros(len(snap.codes) + 1, dtype=bool)
        for i, (system, code) in enumerate(snap.codes.values):
            cached[i] = match(system, code)
        snap.cache[key] = cached
    return cached


def _coded(ctx: Context, table: FactTable, arg: str, groups: Mapping[str, Any], icd10: bool) -> B:
    return _code_table(ctx.snap, arg, groups, icd10)[table.code]


def age_array(snap: Snapshot, at: datetime) -> npt.NDArray[np.float64]:
    d = at.astimezone(UTC)
    key = ("age", d.date(), snap.version)
    cached = snap.cache.get(key)
    if cached is None:
        y = snap.birth_y.astype(np.int32)
        later = (snap.birth_md.astype(np.int32) > d.month * 100 + d.day).astype(np.int32)
        cached = np.where(y == 0, np.nan, (d.year - y - later).astype(np.float64))
        snap.cache[key] = cached
    return cached


def stage_array(snap: Snapshot, t: int, rules: StageRules) -> npt.NDArray[np.int8]:
    """Stages at `t`, reused while no contact's stage can have changed (see
    stage.classify_arrays_until): a live process counting "now" recomputes them only
    when some visit, appointment or threshold time has passed."""
    cached = snap.cache.get("stage")
    if cached is not None:
        version, cached_rules, since, until, stages = cached
        if version == snap.version and cached_rules == rules and since <= t < until:
            return stages  # type: ignore[no-any-return]
    enc = snap.facts["encounter"]
    appt = snap.facts["appointment"]
    bounds_key = ("visit_bounds", snap.version)
    bounds = snap.cache.get(bounds_key)
    if bounds is None:
        bounds = snap.cache[bounds_key] = visit_bounds(snap.n, enc.row, enc.t)
    stages, until = classify_arrays_until(
        snap.n,
        enc.row,
        enc.t,
        appt.row,
        appt.t,
        (appt.flag & BOOKED_BIT) != 0,
        (appt.flag & NO_SHOW_BIT) != 0,
        t,
        rules,
        bounds,
    )
    snap.cache["stage"] = (snap.version, rules, t, until, stages)
    return stages


def _latest_mask(n: int, table: FactTable, sel: B, op: str, value: object) -> B:
    """Contacts whose latest selected value (latest time; ties: the largest value)
    satisfies `op value`. O(rows): two maximum.at passes instead of a sort."""
    rows, ts, vals = table.row[sel], table.t[sel], table.value[sel]
    if not len(rows):
        return np.zeros(n, dtype=bool)
    latest = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(latest, rows, ts)
    top = ts == latest[rows]
    best = np.full(n, -np.inf)
    np.maximum.at(best, rows[top], vals[top])
    has = _rows_mask(n, rows)
    with np.errstate(invalid="ignore"):
        return has & _numbers_mask(best, op, value)


def _eval(node: A.Node, ctx: Context) -> B:
    snap = ctx.snap
    n = snap.n
    if isinstance(node, A.And):
        out = _eval(node.items[0], ctx).copy()
        for item in node.items[1:]:
            out &= _eval(item, ctx)
        return out
    if isinstance(node, A.Or):
        out = _eval(node.items[0], ctx).copy()
        for item in node.items[1:]:
            out |= _eval(item, ctx)
        return out
    if isinstance(node, A.Not):
        return ~_eval(node.item, ctx)
    if isinstance(node, A.Compare):
        attr, op, value = node.attr, node.op, node.value
        if attr == "age":
            ages = age_array(snap, ctx.at)
            with np.errstate(invalid="ignore"):
                return _numbers_mask(ages, op, value) & ~np.isnan(ages)
        if attr == "stage":
            return _vocab_mask(
                stage_array(snap, ctx.t, ctx.rules),
                list(STAGES),
                lambda s: scalar_matches(s, op, value),
            )
        if attr.startswith(A.CUSTOM_PREFIX):
            col = snap.attrs.get(attr[len(A.CUSTOM_PREFIX) :])
            if col is None:
                return np.zeros(n, dtype=bool)
            return _vocab_mask(col, snap.attr_vocab.values, lambda v: scalar_matches(v, op, value))
        return _vocab_mask(
            snap.cats[attr], snap.cat_vocab[attr].values, lambda v: scalar_matches(v, op, value)
        )
    if isinstance(node, A.HasCondition):
        table = snap.facts["condition"]
        sel = _coded(ctx, table, node.code, CONDITION_GROUPS, True)
        sel &= table.flag == 1
        sel &= table.t <= ctx.t
        sel &= (table.end == np.iinfo(np.int64).min) | (table.end > ctx.t)
        return _rows_mask(n, table.row[sel])
    if isinstance(node, A.HasMedication):
        table = snap.facts["medication"]
        sel = _coded(ctx, table, node.code, MEDICATION_GROUPS, False)
        if node.within is None:
            sel &= table.flag == 1
            sel &= table.t <= ctx.t
            sel &= (table.end == np.iinfo(np.int64).min) | (table.end > ctx.t)
        else:
            sel &= _window(table.t, ctx.t, node.within)
        return _rows_mask(n, table.row[sel])
    if isinstance(node, A.Vaccinated):
        table = snap.facts["immunization"]
        sel = _coded(ctx, table, node.code, VACCINE_GROUPS, False) & _window(
            table.t, ctx.t, node.within
        )
        return _rows_mask(n, table.row[sel])
    if isinstance(node, A.HadProcedure):
        table = snap.facts["procedure"]
        sel = _coded(ctx, table, node.code, NO_GROUPS, False) & _window(table.t, ctx.t, node.within)
        return _rows_mask(n, table.row[sel])
    if isinstance(node, A.Lab):
        table = snap.facts["observation"]
        sel = _coded(ctx, table, node.code, NO_GROUPS, False) & _window(table.t, ctx.t, node.within)
        sel &= ~np.isnan(table.value)
        return _latest_mask(n, table, sel, node.op, node.value)
    if isinstance(node, A.Count):
        if node.kind == "visits":
            table = snap.facts["encounter"]
            sel = _window(table.t, ctx.t, node.within)
        else:
            table = snap.facts["appointment"]
            sel = ((table.flag & NO_SHOW_BIT) != 0) & _window(table.t, ctx.t, node.within)
        counts = np.bincount(table.row[sel], minlength=n).astype(np.float64)
        return _numbers_mask(counts, node.op, node.value)
    if isinstance(node, A.Engaged):
        if node.step is not None:
            raise RuleError(f"{node.kind}(step=...) is evaluated only in a journey's branch")
        ev = snap.events
        sel = (ev.kind == EVENT_KINDS.index(ENGAGEMENT_EVENT[node.kind])) & _window(
            ev.t, ctx.t, node.within
        )
        if node.name is not None:
            code = snap.event_names.index.get(node.name.casefold())
            if code is None:
                return np.zeros(n, dtype=bool)
            sel &= ev.name == code
        if node.humans_only and node.kind in ("opened", "clicked"):
            sel &= ev.verdict == VERDICTS.index("human")
        return _rows_mask(n, ev.row[sel])
    if isinstance(node, A.InSegment):
        return _eval_segment(node.name, ctx)
    raise RuleError(f"cannot evaluate {type(node).__name__}")


def _eval_segment(name: str, ctx: Context) -> B:
    if name in ctx.stack:
        chain = " -> ".join([*ctx.stack[ctx.stack.index(name) :], name])
        raise SegmentCycle(f"segments refer to each other in a cycle: {chain}")
    definition = ctx.segments.get(name)
    if definition is None:
        raise SegmentNotFound(f"no segment named {name!r}")
    if isinstance(definition, frozenset):
        rows = [ctx.snap.row_of[c] for c in definition if c in ctx.snap.row_of]
        return _rows_mask(ctx.snap.n, np.asarray(rows, dtype=np.int32))
    ctx.stack.append(name)
    try:
        return _eval(definition, ctx) & _eligible(ctx.snap)
    finally:
        ctx.stack.pop()


def _eligible(snap: Snapshot) -> B:
    return snap.present & ~snap.deceased


def evaluate(
    node: A.Node,
    snap: Snapshot,
    at: datetime,
    *,
    segments: Segments | None = None,
    rules: StageRules = DEFAULT_RULES,
    name: str | None = None,
) -> B:
    """The members of `node` at `at` as a boolean mask over the snapshot's rows.
    `name` is the segment being evaluated (so a reference back to it is a cycle)."""
    ctx = Context(snap, at, epoch_of(at), segments or {}, rules, [name] if name else [])
    return _eval(node, ctx) & _eligible(snap)


def count(node: A.Node, snap: Snapshot, at: datetime, **kw: Any) -> int:
    return int(np.count_nonzero(evaluate(node, snap, at, **kw)))


def member_ids(node: A.Node, snap: Snapshot, at: datetime, **kw: Any) -> list[str]:
    rows = np.flatnonzero(evaluate(node, snap, at, **kw))
    return [snap.ids[i] for i in rows]


# --- explain ---------------------------------------------------------------------------
@dataclass
class Explanation:
    """One clause's result for one contact; `children` for and/or/not."""

    text: str
    result: bool
    children: list[Explanation] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"clause": self.text, "result": self.result}
        if self.children:
            out["children"] = [c.as_dict() for c in self.children]
        return out

    def failed(self) -> list[str]:
        """The leaf clauses that made this result false (or true under a `not`)."""
        if self.result:
            return []
        if not self.children or self.text.startswith("not "):
            return [self.text]
        return [f for c in self.children for f in c.failed()]


def explain(
    node: A.Node,
    snap: Snapshot,
    contact_id: str,
    at: datetime,
    *,
    segments: Segments | None = None,
    rules: StageRules = DEFAULT_RULES,
) -> Explanation:
    """Each clause's result for one contact (from the same masks the count uses)."""
    from carepost.segments.printer import print_rule

    row = snap.row_of.get(contact_id)
    if row is None:
        raise KeyError(contact_id)
    ctx = Context(snap, at, epoch_of(at), segments or {}, rules)

    def walk(n: A.Node) -> Explanation:
        children: list[Explanation] = []
        if isinstance(n, A.And | A.Or):
            children = [walk(i) for i in n.items]
        elif isinstance(n, A.Not):
            children = [walk(n.item)]
        result = bool(_eval(n, ctx)[row])
        return Explanation(print_rule(n), result, children)

    top = walk(node)
    eligible = bool(_eligible(snap)[row])
    if not eligible:
        return Explanation("contact is deceased or removed (never a member)", False)
    return top
