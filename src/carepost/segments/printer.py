"""AST -> rule text, so that `parse(print_rule(node)) == node` for every valid tree."""

from __future__ import annotations

import json

from carepost.segments import ast as A


def literal(value: A.Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _values(value: object) -> str:
    assert isinstance(value, tuple)
    return "[" + ", ".join(literal(v) for v in value) + "]"


def _tail(op: str, value: object) -> str:
    if op == "between":
        assert isinstance(value, tuple)
        return f"between {literal(value[0])} and {literal(value[1])}"
    if op in ("in", "not in", "starts_with"):
        return f"{op} {_values(value)}"
    return f"{op} {literal(value)}"  # type: ignore[arg-type]


def _call(name: str, *args: str) -> str:
    return f"{name}({', '.join(a for a in args if a)})"


def _within(days: int | None) -> str:
    return f"within={days}d" if days is not None else ""


def print_rule(node: A.Node) -> str:
    if isinstance(node, A.Or):
        return " or ".join(
            f"({print_rule(i)})" if isinstance(i, A.Or) else print_rule(i) for i in node.items
        )
    if isinstance(node, A.And):
        return " and ".join(
            f"({print_rule(i)})" if isinstance(i, A.And | A.Or) else print_rule(i)
            for i in node.items
        )
    if isinstance(node, A.Not):
        inner = print_rule(node.item)
        return f"not ({inner})" if isinstance(node.item, A.And | A.Or) else f"not {inner}"
    if isinstance(node, A.Compare):
        return f"{node.attr} {_tail(node.op, node.value)}"
    if isinstance(node, A.HasCondition):
        return _call("has_condition", literal(node.code))
    if isinstance(node, A.HasMedication):
        return _call("has_medication", literal(node.code), _within(node.within))
    if isinstance(node, A.Vaccinated):
        return _call("vaccinated", literal(node.code), _within(node.within))
    if isinstance(node, A.HadProcedure):
        return _call("had_procedure", literal(node.code), _within(node.within))
    if isinstance(node, A.Lab):
        text = f"{_call('lab', literal(node.code))} {_tail(node.op, node.value)}"
        return text + (f" within {node.within}d" if node.within is not None else "")
    if isinstance(node, A.Count):
        return f"{_call(node.kind, _within(node.within))} {_tail(node.op, node.value)}"
    if isinstance(node, A.Engaged):
        return _call(
            node.kind,
            literal(node.name) if node.name is not None else "",
            _within(node.within),
            "" if node.humans_only else "humans_only=false",
            f"step={literal(node.step)}" if node.step is not None else "",
            f"link={node.link}" if node.link is not None else "",
        )
    return _call("in_segment", literal(node.name))
