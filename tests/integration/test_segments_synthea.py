"""Segmenting Synthea's SNOMED-coded FHIR data through named condition groups, with the
expected counts computed independently from the raw JSON (and pinned)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from carepost.audit.actor import Actor
from carepost.contacts.importers.fhir_import import read_fhir, write_fhir
from carepost.db import transaction
from carepost.segments import evaluator
from carepost.segments.groups import CONDITION_GROUPS
from carepost.segments.parser import parse
from carepost.segments.snapshot import build_snapshot
from carepost.workspace import Workspace
from conftest import shared_data

ACTIVE = ("active", "recurrence", "relapse")


def _independent_count(folder: object, snomed: frozenset[str]) -> int:
    """Living patients with an active, unabated Condition coded with one of `snomed`."""
    n = 0
    for path in sorted(folder.glob("*.json")):  # type: ignore[attr-defined]
        bundle = json.loads(path.read_text())
        resources = [e["resource"] for e in bundle.get("entry", [])]
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        if patient.get("deceasedDateTime") or patient.get("deceasedBoolean"):
            continue
        for r in resources:
            if r["resourceType"] != "Condition" or "abatementDateTime" in r:
                continue
            status = r.get("clinicalStatus", {}).get("coding", [{}])[0].get("code")
            codes = {c["code"] for c in r["code"]["coding"]}
            if status in ACTIVE and codes & snomed:
                n += 1
                break
    return n


def test_named_groups_segment_snomed_coded_synthea(workspace: Workspace, actor: Actor) -> None:
    folder = shared_data("synthea-fhir-r4")
    result = read_fhir([folder])
    assert not result.problems
    with transaction(workspace.engine) as session:
        write_fhir(session, workspace.keyring, result, actor=actor, now=datetime.now(UTC))
    snap = build_snapshot(workspace.engine, workspace.keyring, actor=actor)
    at = datetime.now(UTC)
    assert snap.stats()["contacts"] == 35
    expected = {}
    for group in ("hypertension", "diabetes", "obesity", "prediabetes"):
        expected[group] = _independent_count(folder, CONDITION_GROUPS[group].exact)
        got = evaluator.count(parse(f'has_condition("{group}")'), snap, at)
        assert got == expected[group], group
    # Pinned from a by-hand reading of the 35 bundles (one patient is deceased).
    assert expected == {"hypertension": 9, "diabetes": 1, "obesity": 7, "prediabetes": 3}
    # The same group by its SNOMED code alone, and an ICD-10 prefix that Synthea lacks.
    assert evaluator.count(parse('has_condition("38341003")'), snap, at) == 9
    assert evaluator.count(parse('has_condition("I10")'), snap, at) == 0
    # Prediabetes is not diabetes.
    both = evaluator.count(
        parse('has_condition("prediabetes") and has_condition("diabetes")'), snap, at
    )
    assert both <= 1
    # Immunizations (CVX 140 in Synthea) and the influenza group.
    flu_ever = evaluator.count(parse('vaccinated("influenza")'), snap, at)
    assert flu_ever == evaluator.count(parse('vaccinated("140")'), snap, at) > 0
