"""The synthetic population is deterministic and its figures are near the published
ones it cites (population.py)."""

from __future__ import annotations

from collections import Counter
from datetime import date

from carepost.contacts.population import people

AS_OF = date(2026, 11, 24)
POP = list(people(20_000, 3, AS_OF))


def _age(p) -> int | None:  # type: ignore[no-untyped-def]
    born = p.record.get("birth_date")
    if not born:
        return None
    b = date.fromisoformat(born)
    return AS_OF.year - b.year - ((b.month, b.day) > (AS_OF.month, AS_OF.day))


def _codes(p, kind: str) -> set[str]:  # type: ignore[no-untyped-def]
    return {
        payload["code"]["code"] for _, k, payload in p.facts if k == kind and payload.get("code")
    }


def test_deterministic_and_random_access() -> None:
    again = list(people(50, 3, AS_OF))
    assert [p.record for p in again] == [p.record for p in POP[:50]]
    assert [p.facts for p in again] == [p.facts for p in POP[:50]]
    tail = list(people(10, 3, AS_OF, start=40))
    assert [p.record for p in tail] == [p.record for p in POP[40:50]]
    assert next(people(1, 4, AS_OF)).record != POP[0].record


def test_prevalence_close_to_published_figures() -> None:
    adults = [p for p in POP if (a := _age(p)) is not None and a >= 18]
    old = [p for p in adults if (_age(p) or 0) >= 60]
    young = [p for p in adults if (_age(p) or 0) < 40]

    def share(group, prefix: str) -> float:  # type: ignore[no-untyped-def]
        return sum(any(c.startswith(prefix) for c in _codes(p, "condition")) for p in group) / len(
            group
        )

    assert 0.25 <= share(adults, "I10") <= 0.36  # hypertension about 30% of adults
    assert share(old, "I10") > 2 * share(young, "I10") * 2  # rises steeply with age
    assert 0.08 <= share(adults, "E1") <= 0.15  # diabetes about 11%
    assert 0.06 <= share(POP, "J45") <= 0.10  # asthma about 8%
    assert share(old, "E1") > share(young, "E1")
    ages = [a for p in POP if (a := _age(p)) is not None]
    assert 0.15 <= sum(a >= 65 for a in ages) / len(ages) <= 0.20  # Census: 16.8% 65+
    assert 0.01 <= sum(_age(p) is None for p in POP) / len(POP) <= 0.05


def test_medications_and_labs_follow_conditions() -> None:
    diabetics = [
        p for p in POP if any(c.startswith(("E10", "E11")) for c in _codes(p, "condition"))
    ]
    keys = {p.source_key for p in diabetics}
    others = [p for p in POP if p.source_key not in keys]
    on_metformin = [p for p in POP if "860975" in _codes(p, "medication")]
    assert on_metformin
    assert all(p.source_key in keys for p in on_metformin)
    assert all("I10" in _codes(p, "condition") for p in POP if "314076" in _codes(p, "medication"))

    def a1c(group):  # type: ignore[no-untyped-def]
        return [pl["value"] for p in group for _, k, pl in p.facts if k == "observation"]

    d, o = a1c(diabetics), a1c(others)
    assert sum(d) / len(d) > 7.0 > 5.7 > sum(o) / len(o)


def test_flu_vaccination_and_engagement_shares() -> None:
    seniors = [p for p in POP if (_age(p) or 0) >= 65]
    flu_recent = sum(
        any(pl["date"] >= "2026-09-01" for _, k, pl in p.facts if k == "immunization")
        for p in seniors
    ) / len(seniors)
    # FluVaxView: about 70% of 65+ per season; this season's doses so far (to Nov 24).
    assert 0.55 <= flu_recent <= 0.8
    months = Counter(pl["date"][5:7] for p in POP for _, k, pl in p.facts if k == "immunization")
    assert set(months) <= {"09", "10", "11", "12", "01"}
    opens = [v for p in POP for k, _, v, _ in p.events if k == "open"]
    assert 0.45 <= opens.count("machine") / len(opens) <= 0.55  # about half are machine opens
    appts = [
        pl for p in POP for _, k, pl in p.facts if k == "appointment" and pl["status"] != "booked"
    ]
    assert 0.15 <= sum(pl["no_show"] for pl in appts) / len(appts) <= 0.30  # about 23%
