"""The rule language's abstract syntax: frozen dataclasses and their JSON form.

The text form (`parser.py`, `printer.py`) and the JSON form (`to_json`, `from_json`) are
two spellings of the same tree: `parse(print_rule(n)) == n` and `from_json(to_json(n)) == n`.
Windows (`within`) are whole days. A rule holds clinical codes, never patient data.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Union

Scalar = Union[str, int, float, bool]  # noqa: UP007 (used at runtime in isinstance checks)

MAX_DEPTH = 64
CMP_OPS = ("==", "!=", "<", "<=", ">", ">=")
LIST_OPS = ("in", "not in", "starts_with")
ORDER_OPS = ("<", "<=", ">", ">=")
ALL_OPS = (*CMP_OPS, *LIST_OPS, "between")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Built-in attributes and what their values are.
STRING_ATTRS = ("sex", "state", "postal_code", "city", "language", "insurance_type")
NUMBER_ATTRS = ("age",)
STAGE_ATTR = "stage"
ATTRIBUTES = (*NUMBER_ATTRS, *STRING_ATTRS, STAGE_ATTR)
CUSTOM_PREFIX = "attr."
SEXES = ("female", "male", "other", "unknown")

ENGAGEMENT_KINDS = ("opened", "clicked", "form_submitted", "event_received")
COUNT_KINDS = ("visits", "no_shows")
FUNCTIONS = (
    "has_condition",
    "has_medication",
    "vaccinated",
    "had_procedure",
    "lab",
    *COUNT_KINDS,
    *ENGAGEMENT_KINDS,
    "in_segment",
)


class RuleError(ValueError):
    """A rule that does not parse or does not make sense, with where and what was expected.

    The message never contains patient data: rules hold attribute names, codes and
    literals typed by staff, and the error quotes at most the offending token.
    """

    def __init__(
        self,
        message: str,
        *,
        line: int = 1,
        column: int = 1,
        expected: tuple[str, ...] = (),
        suggestion: str | None = None,
    ) -> None:
        self.message = message
        self.line = line
        self.column = column
        self.expected = expected
        self.suggestion = suggestion
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"line {self.line}, column {self.column}: {self.message}"
        if self.expected:
            text += f"; expected {', '.join(self.expected)}"
        if self.suggestion:
            text += f"; did you mean {self.suggestion!r}?"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "line": self.line,
            "column": self.column,
            "expected": list(self.expected),
            "suggestion": self.suggestion,
        }


def _check_scalar(value: object) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise RuleError("numbers must be finite")
    if not isinstance(value, str | int | float | bool):
        raise RuleError(f"not a literal value: {type(value).__name__}")


def _check_numeric_op(op: str, value: object) -> None:
    if op == "between":
        if not (isinstance(value, tuple) and len(value) == 2):
            raise RuleError("between needs two values")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise RuleError("between needs numbers")
            _check_scalar(v)
    elif op in CMP_OPS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RuleError(f"{op} needs a number here")
        _check_scalar(value)
    else:
        raise RuleError(f"operator {op!r} does not apply to numbers")


def _check_window(within: int | None) -> None:
    if within is not None and (isinstance(within, bool) or not 0 <= within <= 36_500):
        raise RuleError("a window is 0 to 36500 days")


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]

    def __post_init__(self) -> None:
        if len(self.items) < 2:
            raise RuleError("'and' needs at least two operands")


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]

    def __post_init__(self) -> None:
        if len(self.items) < 2:
            raise RuleError("'or' needs at least two operands")


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class Compare:
    """`attr op value`. value: a scalar for ==..>=, a tuple for in/not in/starts_with,
    a (low, high) pair for between (inclusive)."""

    attr: str
    op: str
    value: Scalar | tuple[Scalar, ...]

    def __post_init__(self) -> None:
        if self.op not in ALL_OPS:
            raise RuleError(f"unknown operator {self.op!r}")
        if self.attr.startswith(CUSTOM_PREFIX):
            if not IDENT.match(self.attr[len(CUSTOM_PREFIX) :]):
                raise RuleError("custom attribute names are letters, digits and _")
        elif self.attr not in ATTRIBUTES:
            raise RuleError(f"unknown attribute {self.attr!r}")
        if self.op in LIST_OPS or self.op == "between":
            if not isinstance(self.value, tuple) or not self.value:
                raise RuleError(f"{self.op} needs a list")
            for v in self.value:
                _check_scalar(v)
            if self.op == "between" and len(self.value) != 2:
                raise RuleError("between needs two values")
            if self.op == "starts_with" and not all(isinstance(v, str) for v in self.value):
                raise RuleError("starts_with needs strings")
        else:
            _check_scalar(self.value)
        if self.attr in NUMBER_ATTRS:
            if self.op in ("in", "not in"):
                for v in self.value:  # type: ignore[union-attr]
                    _check_numeric_op("==", v)
            else:
                _check_numeric_op(self.op, self.value)
        elif self.attr in STRING_ATTRS or self.attr == STAGE_ATTR:
            if self.op in ORDER_OPS or self.op == "between":
                raise RuleError(f"{self.attr} is compared with ==, !=, in, not in, starts_with")
            values = self.value if isinstance(self.value, tuple) else (self.value,)
            if not all(isinstance(v, str) for v in values):
                raise RuleError(f"{self.attr} is compared with strings")
        if self.op == "between" and isinstance(self.value, tuple):
            lo, hi = self.value
            if isinstance(lo, str) != isinstance(hi, str):
                raise RuleError("between needs two values of one kind")


def _check_code(code: str) -> None:
    if not isinstance(code, str) or not code.strip():
        raise RuleError("a code or group name cannot be empty")


@dataclass(frozen=True)
class HasCondition:
    """An active condition (at evaluation time) by code, code prefix or named group."""

    code: str

    def __post_init__(self) -> None:
        _check_code(self.code)


@dataclass(frozen=True)
class HasMedication:
    """An active medication by RxNorm code or named group; with `within`, any record of
    it dated within the window."""

    code: str
    within: int | None = None

    def __post_init__(self) -> None:
        _check_code(self.code)
        _check_window(self.within)


@dataclass(frozen=True)
class Vaccinated:
    """An immunization (not "not done") by CVX code or named group, ever or within."""

    code: str
    within: int | None = None

    def __post_init__(self) -> None:
        _check_code(self.code)
        _check_window(self.within)


@dataclass(frozen=True)
class HadProcedure:
    code: str
    within: int | None = None

    def __post_init__(self) -> None:
        _check_code(self.code)
        _check_window(self.within)


@dataclass(frozen=True)
class Lab:
    """The latest numeric value of a LOINC observation (within the window) compared."""

    code: str
    op: str
    value: int | float | tuple[int | float, int | float]
    within: int | None = None

    def __post_init__(self) -> None:
        _check_code(self.code)
        _check_numeric_op(self.op, self.value)
        _check_window(self.within)


@dataclass(frozen=True)
class Count:
    """visits(...) or no_shows(...) counted over the window, compared."""

    kind: str
    op: str
    value: int | float | tuple[int | float, int | float]
    within: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in COUNT_KINDS:
            raise RuleError(f"unknown count {self.kind!r}")
        _check_numeric_op(self.op, self.value)
        _check_window(self.within)


@dataclass(frozen=True)
class Engaged:
    """An engagement event of `kind` (named `name` for forms and API events) within the
    window. Opens and clicks count human events only unless humans_only is False.

    `step` (and, for clicks, `link`) narrow opens and clicks to the message a journey's
    send step sent in the current enrolment: they mean something only inside a journey's
    branch rule, so a saved segment refuses them (`journey_predicates`)."""

    kind: str
    name: str | None = None
    within: int | None = None
    humans_only: bool = True
    step: str | None = None
    link: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ENGAGEMENT_KINDS:
            raise RuleError(f"unknown engagement {self.kind!r}")
        if self.kind in ("opened", "clicked") and self.name is not None:
            raise RuleError(f"{self.kind}() takes no name")
        if self.kind == "event_received" and not self.name:
            raise RuleError("event_received() needs an event name")
        if self.kind in ("form_submitted", "event_received") and not self.humans_only:
            raise RuleError("humans_only applies to opened() and clicked()")
        if self.name == "":
            raise RuleError("a name cannot be empty")
        if self.step is not None:
            if self.kind not in ("opened", "clicked"):
                raise RuleError("step= applies to opened() and clicked()")
            if not STEP_ID.match(self.step):
                raise RuleError(f"step id {self.step!r} is not a step id (letters, digits, _ -)")
        if self.link is not None:
            if self.kind != "clicked" or self.step is None:
                raise RuleError("link= applies to clicked(step=...)")
            if not 0 <= self.link <= 9999:
                raise RuleError("link is a link index from 0 to 9999")
        _check_window(self.within)


STEP_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}\Z")


@dataclass(frozen=True)
class InSegment:
    name: str

    def __post_init__(self) -> None:
        _check_code(self.name)


Node = Union[  # noqa: UP007
    And,
    Or,
    Not,
    Compare,
    HasCondition,
    HasMedication,
    Vaccinated,
    HadProcedure,
    Lab,
    Count,
    Engaged,
    InSegment,
]


def walk(node: Node) -> list[Node]:
    """Every node, depth first."""
    out: list[Node] = [node]
    if isinstance(node, And | Or):
        for item in node.items:
            out.extend(walk(item))
    elif isinstance(node, Not):
        out.extend(walk(node.item))
    return out


def journey_predicates(node: Node) -> list[Engaged]:
    """opened(step=...) and clicked(step=...): only a journey's branch can evaluate them."""
    return [n for n in walk(node) if isinstance(n, Engaged) and n.step is not None]


def segment_refs(node: Node) -> set[str]:
    return {n.name for n in walk(node) if isinstance(n, InSegment)}


def clause_count(node: Node) -> int:
    return sum(1 for n in walk(node) if not isinstance(n, And | Or | Not))


# --- JSON form ----------------------------------------------------------------------------
def _value_json(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def to_json(node: Node) -> dict[str, Any]:
    if isinstance(node, And | Or):
        return {"op": type(node).__name__.lower(), "args": [to_json(i) for i in node.items]}
    if isinstance(node, Not):
        return {"op": "not", "arg": to_json(node.item)}
    if isinstance(node, Compare):
        return {
            "op": "compare",
            "attr": node.attr,
            "cmp": node.op,
            "value": _value_json(node.value),
        }
    if isinstance(node, HasCondition):
        return {"op": "has_condition", "code": node.code}
    if isinstance(node, HasMedication | Vaccinated | HadProcedure):
        name = {HasMedication: "has_medication", Vaccinated: "vaccinated"}.get(
            type(node), "had_procedure"
        )
        return {"op": name, "code": node.code, "within_days": node.within}
    if isinstance(node, Lab):
        return {
            "op": "lab",
            "code": node.code,
            "cmp": node.op,
            "value": _value_json(node.value),
            "within_days": node.within,
        }
    if isinstance(node, Count):
        return {
            "op": node.kind,
            "cmp": node.op,
            "value": _value_json(node.value),
            "within_days": node.within,
        }
    if isinstance(node, Engaged):
        doc: dict[str, Any] = {
            "op": node.kind,
            "name": node.name,
            "within_days": node.within,
            "humans_only": node.humans_only,
        }
        # Only when set: saved segments' JSON (and its digests) stay as they were.
        if node.step is not None:
            doc["step"] = node.step
        if node.link is not None:
            doc["link"] = node.link
        return doc
    return {"op": "in_segment", "name": node.name}


def _get(
    obj: dict[str, Any], key: str, kind: type | tuple[type, ...], optional: bool = False
) -> Any:
    if key not in obj or (optional and obj[key] is None):
        if optional:
            return None
        raise RuleError(f"JSON rule: {obj.get('op')!r} needs {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RuleError(f"JSON rule: {key!r} has the wrong type")
    return value


def _tuple_or_scalar(value: object) -> Any:
    return tuple(value) if isinstance(value, list) else value


def from_json(obj: object, depth: int = 0) -> Node:
    """The JSON form back to a tree; anything malformed is a RuleError."""
    if depth > MAX_DEPTH:
        raise RuleError("rule nested too deeply")
    if not isinstance(obj, dict):
        raise RuleError("JSON rule: a node must be an object")
    op = obj.get("op")
    if op in ("and", "or"):
        args = _get(obj, "args", list)
        items = tuple(from_json(a, depth + 1) for a in args)
        return And(items) if op == "and" else Or(items)
    if op == "not":
        return Not(from_json(obj.get("arg"), depth + 1))
    if op == "compare":
        return Compare(
            _get(obj, "attr", str), _get(obj, "cmp", str), _tuple_or_scalar(obj.get("value"))
        )
    if op == "has_condition":
        return HasCondition(_get(obj, "code", str))
    within = _get(obj, "within_days", int, optional=True)
    if op == "has_medication":
        return HasMedication(_get(obj, "code", str), within)
    if op == "vaccinated":
        return Vaccinated(_get(obj, "code", str), within)
    if op == "had_procedure":
        return HadProcedure(_get(obj, "code", str), within)
    if op == "lab":
        return Lab(
            _get(obj, "code", str),
            _get(obj, "cmp", str),
            _tuple_or_scalar(obj.get("value")),
            within,
        )
    if op in COUNT_KINDS:
        return Count(op, _get(obj, "cmp", str), _tuple_or_scalar(obj.get("value")), within)
    if op in ENGAGEMENT_KINDS:
        humans = obj.get("humans_only", True)
        if not isinstance(humans, bool):
            raise RuleError("JSON rule: 'humans_only' is true or false")
        link = obj.get("link")
        if link is not None and (isinstance(link, bool) or not isinstance(link, int)):
            raise RuleError("JSON rule: 'link' is a whole number")
        return Engaged(
            op,
            _get(obj, "name", str, optional=True),
            within,
            humans,
            _get(obj, "step", str, optional=True),
            link,
        )
    if op == "in_segment":
        return InSegment(_get(obj, "name", str))
    raise RuleError(f"JSON rule: unknown op {op!r}")
