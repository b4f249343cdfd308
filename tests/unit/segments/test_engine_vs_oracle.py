"""The engine against the oracle: hypothesis draws rules (and evaluation times on and
around window edges) over a population of a few thousand contacts, and the members must
be identical."""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from segment_oracle import Person, members

from carepost.contacts.population import people
from carepost.segments import ast as A
from carepost.segments.evaluator import SegmentCycle, count, evaluate, explain, member_ids
from carepost.segments.parser import parse
from carepost.segments.printer import print_rule
from carepost.segments.snapshot import Part, Snapshot
from carepost.segments.stage import STAGES

AS_OF = date(2026, 11, 24)
BASE = datetime(2026, 11, 24, tzinfo=UTC)


def _population(n: int = 2500, seed: int = 11) -> list[Person]:
    rnd = random.Random(seed)
    out = []
    for i, gen in enumerate(people(n, seed, AS_OF)):
        record = gen.record
        facts = [payload for _, _, payload in gen.facts]
        # Missing and odd data the generator does not make on its own.
        roll = rnd.random()
        if roll < 0.03:
            record.pop("address", None)
        elif roll < 0.05:
            record["deceased"] = True
        elif roll < 0.07:
            record["attributes"]["visits_ytd"] = str(rnd.randrange(0, 12))
        elif roll < 0.09:
            record["attributes"]["vip"] = rnd.choice([True, False, "true", 1])
        if rnd.random() < 0.05:
            snomed = rnd.choice(["44054006", "38341003", "195967001", "15777000"])
            facts.append(
                {
                    "kind": "condition",
                    "code": {"system": "SNOMED-CT", "code": snomed},
                    "codes": [{"system": "SNOMED-CT", "code": snomed}],
                    "status": rnd.choice(["active", "resolved", "active"]),
                    "date": (AS_OF - timedelta(days=rnd.randrange(0, 400))).isoformat(),
                    "verification": rnd.choice(["confirmed", "refuted", None]),
                }
            )
        if rnd.random() < 0.03:
            facts.append(
                {
                    "kind": "observation",
                    "code": {"system": "LOINC", "code": "4548-4"},
                    "codes": [{"system": "LOINC", "code": "4548-4"}],
                    "status": "final",
                    "date": (AS_OF - timedelta(days=rnd.randrange(0, 200))).isoformat(),
                    "value": rnd.choice(["high", None, 6.5]),
                }
            )
        if rnd.random() < 0.04:  # lapsed patients: only visits two to four years ago
            facts = [f for f in facts if f["kind"] not in ("encounter", "appointment")]
            facts.append(
                {
                    "kind": "encounter",
                    "status": rnd.choice(["finished", "planned", "cancelled"]),
                    "date": (AS_OF - timedelta(days=rnd.randrange(700, 1500))).isoformat(),
                }
            )
        if rnd.random() < 0.03:
            facts.append(
                {
                    "kind": "procedure",
                    "code": {"system": "SNOMED-CT", "code": "73761001"},
                    "codes": [{"system": "SNOMED-CT", "code": "73761001"}],
                    "status": rnd.choice(["completed", "not-done"]),
                    "date": (AS_OF - timedelta(days=rnd.randrange(0, 800))).isoformat(),
                }
            )
        if rnd.random() < 0.03:
            facts.append(
                {
                    "kind": "medication",
                    "code": {"system": "RxNorm", "code": "860975"},
                    "codes": [{"system": "RxNorm", "code": "860975"}],
                    "status": rnd.choice(["stopped", "active"]),
                    "date": (AS_OF - timedelta(days=rnd.randrange(0, 800))).isoformat(),
                    "end": (AS_OF - timedelta(days=rnd.randrange(-30, 30))).isoformat(),
                }
            )
        events = [(k, nm, v, math.floor(at.timestamp())) for k, nm, v, at in gen.events]
        out.append(Person(f"c{i:05d}", record, facts, events))
    return out


POP = _population()


def _snapshot(pop: list[Person]) -> Snapshot:
    part = Part()
    for p in pop:
        part.add_contact(p.id, p.record, p.facts)
    snap = Snapshot.from_parts([part])
    eid = 0
    batch = []
    for p in pop:
        for kind, name, verdict, t in p.events:
            eid += 1
            batch.append((eid, p.id, kind, name, verdict, t))
    snap.add_events(batch)
    return snap


SNAP = _snapshot(POP)

windows = st.one_of(st.none(), st.sampled_from([0, 1, 7, 30, 89, 90, 91, 180, 365, 730]))
codes = st.sampled_from(
    [
        "diabetes",
        "hypertension",
        "asthma",
        "E11",
        "E11.9",
        "E119",
        "I10",
        "J45",
        "E78",
        "e11",
        "44054006",
        "38341003",
        "prediabetes",
        "copd",
        "obesity",
        "depression",
        "F32",
        "Z99",
    ]
)
numbers = st.one_of(st.integers(0, 100), st.floats(4.0, 12.0).map(lambda x: round(x, 1)))
strings = st.sampled_from(
    [
        "MA",
        "ma",
        "NY",
        "CA",
        "TX",
        "NH",
        "en",
        "es",
        "zh",
        "female",
        "male",
        "medicare",
        "commercial",
        "medicaid",
        "self_pay",
        "gold",
        "silver",
        "021",
        "100",
        "9",
        "Boston",
        "",
        "true",
    ]
)


@st.composite
def compares(draw: Any) -> A.Node:
    attr = draw(
        st.sampled_from(
            [
                "age",
                "sex",
                "state",
                "postal_code",
                "city",
                "language",
                "insurance_type",
                "stage",
                "attr.plan",
                "attr.visits_ytd",
                "attr.vip",
                "attr.missing",
            ]
        )
    )
    if attr == "age":
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in", "between"]))
        if op in ("in", "not in"):
            return A.Compare(
                attr, op, tuple(draw(st.lists(st.integers(0, 100), min_size=1, max_size=4)))
            )
        if op == "between":
            lo = draw(st.integers(0, 100))
            return A.Compare(attr, op, (lo, lo + draw(st.integers(0, 40))))
        return A.Compare(attr, op, draw(numbers))
    if attr == "stage":
        op = draw(st.sampled_from(["==", "!=", "in", "not in"]))
        if op in ("in", "not in"):
            return A.Compare(
                attr, op, tuple(draw(st.lists(st.sampled_from(STAGES), min_size=1, max_size=3)))
            )
        return A.Compare(attr, op, draw(st.sampled_from(STAGES)))
    if attr.startswith("attr."):
        op = draw(
            st.sampled_from(["==", "!=", "<", ">=", "in", "not in", "starts_with", "between"])
        )
        lit = st.one_of(strings, numbers, st.booleans())
        if op in ("in", "not in"):
            return A.Compare(attr, op, tuple(draw(st.lists(lit, min_size=1, max_size=3))))
        if op == "starts_with":
            return A.Compare(attr, op, tuple(draw(st.lists(strings, min_size=1, max_size=2))))
        if op == "between":
            lo = draw(st.integers(0, 10))
            return A.Compare(attr, op, (lo, lo + draw(st.integers(0, 5))))
        return A.Compare(attr, op, draw(lit))
    op = draw(st.sampled_from(["==", "!=", "in", "not in", "starts_with"]))
    vals = st.sampled_from(["female", "male", "other", "FEMALE"]) if attr == "sex" else strings
    if op in ("in", "not in", "starts_with"):
        return A.Compare(attr, op, tuple(draw(st.lists(vals, min_size=1, max_size=3))))
    return A.Compare(attr, op, draw(vals))


@st.composite
def numeric_cmp(draw: Any, values: Any) -> tuple[str, Any]:
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "between"]))
    if op == "between":
        lo = draw(values)
        return op, (lo, lo + draw(values))
    return op, draw(values)


@st.composite
def leaves(draw: Any) -> A.Node:
    kind = draw(st.integers(0, 9))
    if kind <= 2:
        return draw(compares())
    if kind == 3:
        return A.HasCondition(draw(codes))
    if kind == 4:
        c = draw(
            st.sampled_from(["metformin", "insulin", "statin", "860975", "314076", "albuterol"])
        )
        return A.HasMedication(c, draw(windows))
    if kind == 5:
        c = draw(st.sampled_from(["influenza", "158", "197", "covid19"]))
        return A.Vaccinated(c, draw(windows))
    if kind == 6:
        op, v = draw(numeric_cmp(st.floats(4.0, 12.0).map(lambda x: round(x, 1))))
        return A.Lab(draw(st.sampled_from(["4548-4", "2345-7"])), op, v, draw(windows))
    if kind == 7:
        op, v = draw(numeric_cmp(st.integers(0, 4)))
        return A.Count(draw(st.sampled_from(["visits", "no_shows"])), op, v, draw(windows))
    if kind == 8:
        k = draw(st.sampled_from(["opened", "clicked", "form_submitted", "event_received"]))
        name = None
        if k == "form_submitted":
            name = draw(st.sampled_from([None, "flu-consent", "FLU-CONSENT", "other"]))
        if k == "event_received":
            name = draw(st.sampled_from(["portal_login", "nothing"]))
        humans = draw(st.booleans()) if k in ("opened", "clicked") else True
        return A.Engaged(k, name, draw(windows), humans)
    return A.HadProcedure("73761001", draw(windows))


rules = st.recursive(
    leaves(),
    lambda kids: st.one_of(
        st.lists(kids, min_size=2, max_size=4).map(lambda xs: A.And(tuple(xs))),
        st.lists(kids, min_size=2, max_size=3).map(lambda xs: A.Or(tuple(xs))),
        kids.map(A.Not),
    ),
    max_leaves=8,
)
# Facts are dated at midnight UTC; times on, just before and just after day boundaries
# put window edges (at - N days == t) right on the data.
times = st.builds(
    lambda days, sec: BASE - timedelta(days=days) + timedelta(seconds=sec),
    st.sampled_from([0, 1, 30, 90, 180, 200, 365, 400, 730]),
    st.sampled_from([-1, 0, 1, 43_200]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=rules, at=times)
def test_engine_equals_oracle(rule: A.Node, at: datetime) -> None:
    assert set(member_ids(rule, SNAP, at)) == members(rule, POP, at)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=rules, at=times)
def test_not_is_complement_within_eligible_contacts(rule: A.Node, at: datetime) -> None:
    eligible = count(A.Or((rule, A.Not(rule))), SNAP, at)
    assert count(rule, SNAP, at) + count(A.Not(rule), SNAP, at) == eligible
    assert eligible == sum(1 for p in POP if not p.record.get("deceased"))


def test_population_exercises_every_predicate() -> None:
    # The random rules above mean something only if the data has members for them.
    at = BASE
    for text in [
        'has_condition("diabetes")',
        'has_condition("44054006")',
        'lab("4548-4") > 7 within 180d',
        'vaccinated("influenza", within=365d)',
        "opened(within=90d)",
        "opened(within=90d, humans_only=false) and not opened(within=90d)",
        "clicked(within=180d)",
        'form_submitted("flu-consent", within=90d)',
        'event_received("portal_login", within=90d)',
        "no_shows(within=365d) >= 2",
        'stage == "at_risk"',
        'stage == "prospect"',
        'stage == "new"',
        'stage == "lapsed"',
        'has_medication("metformin")',
        'had_procedure("73761001")',
        "attr.visits_ytd > 5",
    ]:
        node = parse(text)
        n = count(node, SNAP, at)
        assert n == len(members(node, POP, at)), text
        assert 0 < n < len(POP), text
    assert count(parse("age >= 0"), SNAP, at) < count(parse("age >= 0 or not age >= 0"), SNAP, at)


def test_window_edges_exactly() -> None:
    person = Person(
        "edge",
        {"v": 1, "birth_date": "1960-11-24"},
        [
            {
                "kind": "immunization",
                "code": {"system": "CVX", "code": "158"},
                "codes": [{"system": "CVX", "code": "158"}],
                "status": "completed",
                "date": "2025-11-24",
            }
        ],
    )
    snap = _snapshot([person])
    node = A.Vaccinated("influenza", 365)
    edge = datetime(2026, 11, 24, tzinfo=UTC)  # exactly 365 days after the dose
    assert count(node, snap, edge) == 1
    assert count(node, snap, edge + timedelta(seconds=1)) == 0
    assert count(node, snap, datetime(2025, 11, 24, tzinfo=UTC) - timedelta(seconds=1)) == 0
    # Age turns 66 on the birthday, not a day before.
    assert count(parse("age >= 66"), snap, edge) == 1
    assert count(parse("age >= 66"), snap, edge - timedelta(seconds=1)) == 0


def test_missing_data_is_false_and_not_complements() -> None:
    person = Person("nodob", {"v": 1})
    snap = _snapshot([person])
    for text in ["age >= 0", "age < 200", 'state == "MA"', 'lab("4548-4") > 0', 'attr.plan != "x"']:
        assert count(parse(text), snap, BASE) == 0, text
        assert count(parse(f"not ({text})"), snap, BASE) == 1, text
    assert count(parse("visits() == 0"), snap, BASE) == 1
    assert count(parse('stage == "prospect"'), snap, BASE) == 1


def test_segment_references_and_cycles() -> None:
    segs = {
        "diabetics": parse('has_condition("diabetes")'),
        "older_diabetics": parse('age >= 65 and in_segment("diabetics")'),
        "vips": frozenset({"c00001", "c00002", "nobody"}),
        "loop_a": parse('in_segment("loop_b")'),
        "loop_b": parse('age > 3 and in_segment("loop_a")'),
    }
    node = parse('in_segment("older_diabetics") or in_segment("vips")')
    assert set(member_ids(node, SNAP, BASE, segments=segs)) == members(
        node, POP, BASE, segments=segs
    )
    with pytest.raises(SegmentCycle, match="loop_a -> loop_b -> loop_a"):
        evaluate(parse('in_segment("loop_a")'), SNAP, BASE, segments=segs)
    with pytest.raises(SegmentCycle):
        evaluate(
            parse('in_segment("me")'), SNAP, BASE, segments={"me": parse("age > 1")}, name="me"
        )


def test_explain_names_the_failing_clause() -> None:
    node = parse('age >= 18 and has_condition("diabetes") and not opened(within=30d)')
    member = member_ids(node, SNAP, BASE)[0]
    result = explain(node, SNAP, member, BASE)
    assert result.result
    assert result.failed() == []
    outsider = next(
        p.id
        for p in POP
        if not p.record.get("deceased")
        and p.id not in set(member_ids(node, SNAP, BASE))
        and "birth_date" in p.record
    )
    why = explain(node, SNAP, outsider, BASE)
    assert not why.result
    assert why.failed()
    assert all(f in [print_rule(i) for i in node.items] for f in why.failed())  # type: ignore[union-attr]
