"""Stage rules (scalar and vectorised) and code groups."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carepost.segments.groups import CONDITION_GROUPS, VACCINE_GROUPS, code_matcher, matches
from carepost.segments.stage import DAY, STAGES, StageRules, classify, classify_arrays

AT = 1_800_000_000


@pytest.mark.parametrize(
    ("visits", "appts", "expected"),
    [
        ([], [], "prospect"),
        ([], [(AT + 10 * DAY, "booked", False)], "new"),
        ([AT + DAY], [], "prospect"),  # a future visit is not a visit yet
        ([AT - 10 * DAY], [], "new"),
        ([AT - 90 * DAY], [], "new"),  # the edge is inclusive
        ([AT - 91 * DAY], [], "active"),
        (
            [AT - 400 * DAY, AT - 100 * DAY],
            [(AT - 5 * DAY, "noshow", True), (AT - 50 * DAY, "noshow", True)],
            "at_risk",
        ),
        (
            [AT - 400 * DAY, AT - 100 * DAY],
            [(AT - 5 * DAY, "noshow", True), (AT - 366 * DAY, "noshow", True)],
            "active",
        ),
        ([AT - 365 * DAY], [], "active"),
        ([AT - 366 * DAY], [], "overdue"),
        ([AT - 500 * DAY], [(AT + 30 * DAY, "booked", False)], "active"),
        ([AT - 500 * DAY], [(AT + 100 * DAY, "booked", False)], "overdue"),
        ([AT - 731 * DAY], [], "lapsed"),
    ],
)
def test_classify(visits: list[int], appts: list[tuple[int, str, bool]], expected: str) -> None:
    assert classify(visits, appts, AT) == expected


def test_rules_are_configurable() -> None:
    assert classify([AT - 100 * DAY], [], AT, StageRules(new_days=120)) == "new"
    assert classify([AT - 200 * DAY], [], AT, StageRules(active_days=180)) == "overdue"
    with pytest.raises(ValueError, match="active_days"):
        StageRules(active_days=800, lapsed_days=700)


offsets = st.integers(-800, 200).map(lambda d: AT + d * DAY + (d % 3 - 1))


@settings(max_examples=300, deadline=None)
@given(
    people=st.lists(
        st.tuples(
            st.lists(offsets, max_size=4),
            st.lists(
                st.tuples(
                    offsets,
                    st.sampled_from(["booked", "fulfilled", "noshow", "pending"]),
                    st.booleans(),
                ),
                max_size=4,
            ),
        ),
        min_size=1,
        max_size=20,
    ),
    rules=st.builds(
        StageRules,
        new_days=st.integers(0, 200),
        active_days=st.integers(0, 400),
        lapsed_days=st.just(800),
        at_risk_no_shows=st.integers(1, 3),
    ),
)
def test_vectorised_equals_scalar(
    people: list[tuple[list[int], list[tuple[int, str, bool]]]], rules: StageRules
) -> None:
    vr, vt, ar, at, ab, an = [], [], [], [], [], []
    for row, (visits, appts) in enumerate(people):
        vr += [row] * len(visits)
        vt += visits
        for t, status, ns in appts:
            ar.append(row)
            at.append(t)
            ab.append(status in ("booked", "pending"))
            an.append(ns)
    got = classify_arrays(
        len(people),
        np.asarray(vr, np.int32),
        np.asarray(vt, np.int64),
        np.asarray(ar, np.int32),
        np.asarray(at, np.int64),
        np.asarray(ab, bool),
        np.asarray(an, bool),
        AT,
        rules,
    )
    assert [STAGES[i] for i in got] == [classify(v, a, AT, rules) for v, a in people]


def test_condition_groups_cover_icd10_and_snomed() -> None:
    for name, icd, snomed in [
        ("diabetes", "E11.9", "44054006"),
        ("hypertension", "I10", "38341003"),
        ("asthma", "J45.909", "195967001"),
        ("hyperlipidemia", "E78.5", "55822004"),
        ("copd", "J44.9", "13645005"),
        ("obesity", "E66.9", "162864005"),
        ("depression", "F32.9", "370143000"),
    ]:
        group = CONDITION_GROUPS[name]
        assert group.icd10_prefixes
        assert group.exact
        assert matches(name, CONDITION_GROUPS, "ICD-10-CM", icd, icd10_prefix=True)
        assert matches(name, CONDITION_GROUPS, "SNOMED-CT", snomed, icd10_prefix=True)
    # Prediabetes is not diabetes, in either code system.
    assert not matches("diabetes", CONDITION_GROUPS, "SNOMED-CT", "15777000", icd10_prefix=True)
    assert not matches("diabetes", CONDITION_GROUPS, "ICD-10-CM", "R73.03", icd10_prefix=True)
    # A SNOMED code is never an ICD-10 prefix match, and prefixes ignore dots and case.
    assert not matches("diabetes", CONDITION_GROUPS, "SNOMED-CT", "E11", icd10_prefix=True)
    by_code = code_matcher("e119", CONDITION_GROUPS, icd10_prefix=True)
    assert by_code("ICD-10-CM", "E11.9")
    assert not by_code("ICD-10-CM", "E10.9")
    assert by_code("ICD-10-CM", "E11.9")
    assert not by_code("SNOMED-CT", "E119x")


def test_vaccine_groups() -> None:
    flu = VACCINE_GROUPS["influenza"].exact
    assert {"140", "150", "158", "197"} <= flu
    assert "207" not in flu
    assert "207" in VACCINE_GROUPS["covid19"].exact
    assert matches("Influenza", VACCINE_GROUPS, "CVX", "140", icd10_prefix=False)
