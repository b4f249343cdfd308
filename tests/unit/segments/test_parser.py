"""Parser, printer and JSON form: round trips, fuzzing, and errors that say where."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine_vs_oracle import rules

from carepost.segments import ast as A
from carepost.segments.ast import RuleError
from carepost.segments.parser import parse, tokenize
from carepost.segments.printer import print_rule


@settings(max_examples=400, deadline=None)
@given(rules)
def test_print_then_parse_is_identity(node: A.Node) -> None:
    assert parse(print_rule(node)) == node


@settings(max_examples=200, deadline=None)
@given(rules)
def test_json_round_trip(node: A.Node) -> None:
    wire = orjson.loads(orjson.dumps(A.to_json(node)))
    assert A.from_json(wire) == node


literals = st.one_of(
    st.text(max_size=8),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(
    attr=st.sampled_from(["attr.plan", "attr.x_1", "attr.not"]),
    op=st.sampled_from(["==", "!=", "<", ">=", "in", "not in"]),
    values=st.lists(literals, min_size=1, max_size=3),
)
def test_any_literal_round_trips(attr: str, op: str, values: list[Any]) -> None:
    value = tuple(values) if op in ("in", "not in") else values[0]
    node = A.Compare(attr, op, value)
    assert parse(print_rule(node)) == node


def _parse_or_error(text: str) -> A.Node | RuleError:
    """Any other exception propagates and fails the test: that is the point."""
    try:
        return parse(text)
    except RuleError as exc:
        return exc


@settings(max_examples=1500, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_text_never_crashes(text: str) -> None:
    result = _parse_or_error(text)
    if isinstance(result, RuleError):
        assert result.line >= 1
        assert result.column >= 1
        assert str(result).startswith(f"line {result.line}, column {result.column}:")
    else:
        assert parse(print_rule(result)) == result


TOKENS = [
    "age",
    "stage",
    "attr",
    ".",
    "plan",
    "has_condition",
    "lab",
    "(",
    ")",
    "[",
    "]",
    ",",
    '"E11"',
    '"x"',
    "50",
    "7.0",
    "-3",
    "30d",
    "4w",
    "==",
    "=",
    ">=",
    "<",
    "in",
    "not",
    "and",
    "or",
    "between",
    "within",
    "within=",
    "humans_only=",
    "true",
    "false",
    "starts_with",
    "opened",
    "visits",
    "in_segment",
    "\n",
    "é",
    '"\\q"',
    '"unterminated',
]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=14))
def test_fuzz_token_soup_never_crashes(parts: list[str]) -> None:
    result = _parse_or_error(" ".join(parts))
    if isinstance(result, RuleError):
        assert result.line >= 1
        assert result.column >= 1
    else:
        assert parse(print_rule(result)) == result


def test_deep_nesting_is_a_rule_error() -> None:
    with pytest.raises(RuleError, match="nested too deeply"):
        parse("(" * 500 + "age > 1" + ")" * 500)
    with pytest.raises(RuleError, match="nested too deeply"):
        parse("not " * 500 + "age > 1")


@pytest.mark.parametrize(
    ("text", "line", "column", "needle", "suggestion"),
    [
        ("agee >= 50", 1, 1, "unknown attribute 'agee'", "age"),
        ('has_conditon("E11")', 1, 1, "unknown function", "has_condition"),
        ('age >= 50 and\n  stage == "activ"', 2, 3, "unknown stage 'activ'", "active"),
        ("age = 50", 1, 5, "unexpected '='", "=="),
        ("age >= ", 1, 8, "the end of the rule", None),
        ('vaccinated("influenza", within=365)', 1, 32, "a window like 30d", None),
        ('vaccinated("influenza", withn=365d)', 1, 25, "takes no argument 'withn'", "within"),
        ("(age > 3", 1, 9, "expected ')'", None),
        ('sex == "femal"', 1, 1, "unknown sex", "female"),
        ("age > 3 age", 1, 9, "unexpected 'age'", None),
        ('state == "MA', 1, 10, "unterminated string", None),
        ('age >= "old"', 1, 1, "needs a number", None),
        ('state > "MA"', 1, 1, "compared with ==", None),
        ('lab("4548-4")', 1, 14, "after lab()", None),
        ("", 1, 1, "empty rule", None),
        ("age > 1 # comment", 1, 9, "unexpected character", None),
    ],
)
def test_errors_say_where_and_what(
    text: str, line: int, column: int, needle: str, suggestion: str | None
) -> None:
    with pytest.raises(RuleError) as caught:
        parse(text)
    err = caught.value
    assert (err.line, err.column) == (line, column), str(err)
    assert needle in str(err)
    assert err.suggestion == suggestion


def test_the_issue_examples_parse() -> None:
    examples = [
        'age >= 50 and sex == "female" and state in ["MA", "NH"]',
        'has_condition("E11")',
        'has_condition("diabetes")',
        'lab("4548-4") > 7.0 within 180d',
        'not vaccinated("influenza", within=365d)',
        'stage in ["new", "active", "overdue", "at_risk"]',
        'postal_code starts_with ["021", "031"] and language == "es"'
        ' and insurance_type == "medicaid"',
        'attr.plan == "gold" and opened(within=30d) and not clicked(within=30d)',
        'form_submitted("flu-consent", within=90d) or event_received("portal_login", within=7d)',
        "visits(within=365d) >= 2 and no_shows(within=365d) between 1 and 3",
        'had_procedure("73761001", within=3650d) and has_medication("metformin")',
        'in_segment("diabetics") and age between 18 and 64',
    ]
    for text in examples:
        node = parse(text)
        assert parse(print_rule(node)) == node
    assert parse('lab("4548-4") > 7.0 within 180d') == A.Lab("4548-4", ">", 7.0, 180)
    assert parse("opened(within=2w)") == A.Engaged("opened", None, 14, True)
    assert tokenize("a\n  b")[1].line == 2


def test_json_errors_are_rule_errors() -> None:
    for bad in [
        [],
        {"op": "nope"},
        {"op": "and", "args": [{"op": "has_condition", "code": "E11"}]},
        {"op": "compare", "attr": "agee", "cmp": ">", "value": 1},
        {"op": "compare", "attr": "age", "cmp": ">", "value": "x"},
        {"op": "lab", "code": "4548-4", "cmp": ">", "value": 7, "within_days": -1},
        {"op": "vaccinated", "code": "", "within_days": None},
        {"op": "opened", "name": None, "within_days": 30, "humans_only": "yes"},
    ]:
        with pytest.raises(RuleError):
            A.from_json(bad)


def test_journey_predicates_parse_print_and_round_trip_through_json() -> None:
    node = parse('opened(step="welcome") and not clicked(step="offer", link=2, within=7d)')
    engaged = A.journey_predicates(node)
    assert [(e.kind, e.step, e.link, e.within) for e in engaged] == [
        ("opened", "welcome", None, None),
        ("clicked", "offer", 2, 7),
    ]
    assert parse(print_rule(node)) == node
    assert A.from_json(orjson.loads(orjson.dumps(A.to_json(node)))) == node
    # Rules without them keep their JSON form (saved segments' digests do not move).
    assert "step" not in A.to_json(parse("opened(within=30d)"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('form_submitted("x", step="a")', "takes no argument 'step'"),
        ("opened(step=welcome)", "a step id like"),
        ("clicked(link=2)", "link= applies to clicked(step=...)"),
        ('clicked(step="a", link="2")', "a link index like 2"),
        ('opened(step="9lives")', "is not a step id"),
        ('opened(step="a", link=1)', "takes no argument 'link'"),
    ],
)
def test_journey_predicate_mistakes_are_named(text: str, message: str) -> None:
    with pytest.raises(RuleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text)
