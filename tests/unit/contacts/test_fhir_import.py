"""FHIR import on a real database with the shared data: Synthea transaction Bundles, Bulk
Data NDJSON and the HL7 examples, plus broken inputs built from them.

PHI discipline holds for synthetic data too: assertions compare patient values to booleans
first, so a failure never prints a name, a date or a code tied to a person; file names
(Synthea names files after patients) are never printed either.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from carepost.audit.actor import Actor
from carepost.contacts import phi
from carepost.contacts.importers.errors import ImportRejected
from carepost.contacts.importers.fhir_import import (
    FhirImportSummary,
    import_fhir,
    read_fhir,
)
from carepost.contacts.models import ImportRun
from carepost.contacts.service import count_contacts, list_contacts
from carepost.contacts.store import ContactWriter
from carepost.db import transaction
from carepost.workspace import Workspace
from conftest import shared_data

NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
STATUSES = ("created", "updated", "unchanged", "skipped")

# Sums of the per-file table in synthea-fhir-r4/PROVENANCE.md (35 rows), cross-checked
# against the files themselves in test_synthea_expected_counts_match_provenance_and_files.
SYNTHEA = {
    "Patient": 35,
    "Condition": 108,
    "MedicationRequest": 76,
    "Immunization": 326,
    "Procedure": 96,
    "Encounter": 319,
    "Observation": 1986,
    "AllergyIntolerance": 9,
}
PROVENANCE_COLUMNS = {  # column of the PROVENANCE table -> resource type
    "Condition": "Condition",
    "MedicationRequest": "MedicationRequest",
    "Immunization": "Immunization",
    "Procedure": "Procedure",
    "Encounter": "Encounter",
    "Observation": "Observation",
    "AllergyIntolerance": "AllergyIntolerance",
}
FACT_KIND = {
    "Condition": "condition",
    "MedicationRequest": "medication",
    "Immunization": "immunization",
    "Procedure": "procedure",
    "Encounter": "encounter",
    "Observation": "observation",
}

# fhir-bulk-ndjson/PROVENANCE.md line counts.
BULK_IMPORTED = {
    "Patient": 6,
    "Condition": 190,
    "Encounter": 196,
    "Immunization": 72,
    "MedicationRequest": 118,
    "Procedure": 288,
    "AllergyIntolerance": 8,
}
BULK_IGNORED = {
    "Device": 9,
    "DocumentReference": 196,
    "Location": 44,
    "Organization": 43,
    "Practitioner": 43,
    "PractitionerRole": 43,
}


# --- helpers -----------------------------------------------------------------------------
def run_import(
    ws: Workspace, actor: Actor, paths: list[Path], *, skip_invalid: bool = False
) -> FhirImportSummary:
    with transaction(ws.engine) as session:
        return import_fhir(
            session,
            ws.keyring,
            paths,
            actor=actor,
            now=NOW,
            skip_invalid=skip_invalid,
            batch_size=500,
        )


def by_status(summary: FhirImportSummary, status: str) -> dict[str, int]:
    return {t: row[status] for t, row in summary.counts.items() if row.get(status)}


def provenance_rows(folder: Path) -> list[dict[str, str]]:
    """The per-file table of synthea-fhir-r4/PROVENANCE.md as dicts keyed by header."""
    lines = (folder / "PROVENANCE.md").read_text(encoding="utf-8").splitlines()
    header_at = next(i for i, line in enumerate(lines) if line.startswith("| file |"))
    headers = [h.strip() for h in lines[header_at].strip("|").split("|")]
    rows = []
    for line in lines[header_at + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append(dict(zip(headers, cells, strict=True)))
    return rows


def contact_for(ws: Workspace, session: Any, source_key: str) -> str | None:
    writer = ContactWriter(session, ws.keyring, now=NOW, source="fhir")
    found = writer.resolve("source", [writer.source_bi(source_key)])
    ids = next(iter(found.values()), [])
    return ids[0] if ids else None


def write_json(path: Path, doc: Any) -> Path:
    path.write_bytes(orjson.dumps(doc))
    return path


def examples_file(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((shared_data("fhir-r4-examples") / name).read_bytes())
    return doc


# --- reading only (no database) ------------------------------------------------------------
def test_synthea_expected_counts_match_provenance_and_files() -> None:
    folder = shared_data("synthea-fhir-r4")
    rows = provenance_rows(folder)
    table = Counter({"Patient": len(rows)})
    for row in rows:
        for column, rtype in PROVENANCE_COLUMNS.items():
            table[rtype] += int(row[column])
    in_files: Counter[str] = Counter()
    for path in folder.glob("*.json"):
        for entry in orjson.loads(path.read_bytes())["entry"]:
            in_files[entry["resource"]["resourceType"]] += 1
    for rtype, n in SYNTHEA.items():
        assert table[rtype] == n, rtype
        assert in_files[rtype] == n, rtype


def test_bulk_line_counts_match_provenance() -> None:
    folder = shared_data("fhir-bulk-ndjson")
    for rtype, n in {**BULK_IMPORTED, **BULK_IGNORED}.items():
        lines = (folder / f"{rtype}.000.ndjson").read_bytes().splitlines()
        assert sum(1 for line in lines if line.strip()) == n, rtype


def test_ndjson_named_explicitly_is_read_even_off_convention() -> None:
    result = read_fhir([shared_data("fhir-bulk-ndjson") / "log.ndjson"])
    assert len(result.problems) == 4  # four log lines, none a FHIR resource
    assert all("log.ndjson line" in p.where for p in result.problems)
    assert all("no resourceType" in p.message for p in result.problems)
    assert len(result.ignored_files) == 0


def test_contained_and_bundled_medications_give_codes() -> None:
    contained = read_fhir([shared_data("fhir-r4-examples") / "medicationrequest0301.json"])
    (fact,) = contained.facts
    assert fact.payload["code"]["code"] == "430127000"  # from the contained Medication
    assert fact.patient_keys == ["fhir:Patient/pat1"]


def test_bundle_references_by_urn_and_medication_entries(tmp_path: Path) -> None:
    patient = {"resourceType": "Patient", "gender": "female"}  # no id: keyed by fullUrl
    medication = {
        "resourceType": "Medication",
        "code": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "313782"}]
        },
    }
    request = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "urn:uuid:p-1"},
        "medicationReference": {"reference": "urn:uuid:m-1"},
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:r-1", "resource": request},
            {"fullUrl": "urn:uuid:m-1", "resource": medication},
            {"fullUrl": "urn:uuid:p-1", "resource": patient},
        ],
    }
    result = read_fhir([write_json(tmp_path / "b.json", bundle)])
    assert len(result.problems) == 0
    assert [i.source_key for i in result.inputs] == ["fhir:urn:uuid:p-1"]
    (fact,) = result.facts
    assert fact.source_key == "fhir:urn:uuid:r-1"  # no id: the fullUrl keys it
    assert fact.patient_keys[0] == "fhir:urn:uuid:p-1"
    assert fact.payload["code"] == {"system": "RxNorm", "code": "313782", "display": None}
    assert result.ignored == {"Medication": 1}


def test_appointment_no_show_and_participant_patient(tmp_path: Path) -> None:
    doc = examples_file("appointment-example.json")
    doc["status"] = "noshow"
    result = read_fhir([write_json(tmp_path / "appt.json", doc)])
    (fact,) = result.facts
    assert fact.kind == "appointment"
    assert fact.payload["no_show"] is True
    assert fact.payload["date"] == doc["start"]
    assert fact.patient_keys == ["fhir:Patient/example"]


def test_validation_problem_names_path_and_type_never_the_value(tmp_path: Path) -> None:
    bad_value = "31/12/1980-not-a-date"
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Organization", "name": "Clinic"}},
            {"resource": {"resourceType": "Patient", "id": "p1", "birthDate": bad_value}},
        ],
    }
    result = read_fhir([write_json(tmp_path / "bundle.json", bundle)])
    (problem,) = result.problems
    assert problem.where.endswith("bundle.json $.entry[1].resource.birthDate")
    assert problem.resource_type == "Patient"
    assert "value_error" in problem.message
    assert bad_value not in str(problem)
    assert result.invalid == {"Patient": 1}
    assert len(result.inputs) == 0


# --- Synthea -------------------------------------------------------------------------------
def test_synthea_folder_imports_exact_counts_then_is_unchanged(
    workspace: Workspace, actor: Actor
) -> None:
    folder = shared_data("synthea-fhir-r4")
    first = run_import(workspace, actor, [folder])
    n_problems, n_skipped = len(first.problems), len(first.skipped)
    assert n_problems == 0
    assert n_skipped == 0
    assert by_status(first, "created") == SYNTHEA
    for status in ("updated", "unchanged", "skipped"):
        assert by_status(first, status) == {}, status
    assert "AllergyIntolerance" not in first.ignored
    assert {"Claim", "ExplanationOfBenefit", "Organization", "Practitioner"} <= set(first.ignored)
    assert first.files == 35

    second = run_import(workspace, actor, [folder])
    assert by_status(second, "created") == {}
    assert by_status(second, "updated") == {}
    assert by_status(second, "unchanged") == SYNTHEA
    assert second.ignored == first.ignored
    with transaction(workspace.engine) as session:
        assert count_contacts(session) == 35
        runs = session.scalar(select(func.count()).select_from(ImportRun))
    assert runs == 2


def test_synthea_patient_decrypts_to_provenance_values(workspace: Workspace, actor: Actor) -> None:
    folder = shared_data("synthea-fhir-r4")
    facts = (
        "Condition",
        "MedicationRequest",
        "Immunization",
        "Procedure",
        "Encounter",
        "Observation",
    )
    row = next(
        r
        for r in provenance_rows(folder)
        if all(int(r[c]) > 0 for c in facts) and r["AllergyIntolerance"] == "0"
    )
    summary = run_import(workspace, actor, [folder / row["file"]])
    assert by_status(summary, "created") == {"Patient": 1, **{t: int(row[t]) for t in facts}}
    with transaction(workspace.engine) as session:
        (contact,) = list_contacts(session)
        view = phi.read_contact(
            session, workspace.keyring, contact.id, actor=actor, purpose="test: importer round trip"
        )
    record = view.record
    birth_ok = record.get("birth_date") == row["birthDate"]
    sex_ok = record.get("sex") == row["gender"]
    assert birth_ok, "birth date differs from PROVENANCE.md (values not shown)"
    assert sex_ok, "sex differs from PROVENANCE.md (values not shown)"
    assert {"name", "address", "mrn", "identifiers", "language"} <= set(record)
    kinds = Counter(f["kind"] for f in view.facts)
    assert kinds == {FACT_KIND[t]: int(row[t]) for t in facts}
    assert view.source == "fhir"
    observations = [f for f in view.facts if f["kind"] == "observation"]
    assert any(f.get("category") == "vital-signs" for f in observations)
    assert any(f.get("components") for f in observations)  # blood pressure panels
    assert all(f["code"]["system"] == "LOINC" for f in observations)


# --- Bulk Data NDJSON ----------------------------------------------------------------------
def test_bulk_ndjson_folder(workspace: Workspace, actor: Actor) -> None:
    folder = shared_data("fhir-bulk-ndjson")
    summary = run_import(workspace, actor, [folder])
    n_problems, n_skipped = len(summary.problems), len(summary.skipped)
    assert n_problems == 0
    assert n_skipped == 0
    assert by_status(summary, "created") == BULK_IMPORTED
    assert by_status(summary, "skipped") == {}
    assert summary.ignored == BULK_IGNORED
    assert [Path(p.where).name for p in summary.ignored_files] == ["log.ndjson"]
    assert "Bulk Data" in summary.ignored_files[0].message
    assert summary.files == 13


def test_facts_attach_to_a_patient_from_an_earlier_import(
    workspace: Workspace, actor: Actor
) -> None:
    folder = shared_data("fhir-bulk-ndjson")
    first = run_import(workspace, actor, [folder / "Patient.000.ndjson"])
    assert by_status(first, "created") == {"Patient": 6}
    second = run_import(workspace, actor, [folder / "Condition.000.ndjson"])
    assert by_status(second, "created") == {"Condition": 190}
    assert by_status(second, "skipped") == {}
    assert "Patient" not in second.counts
    with transaction(workspace.engine) as session:
        contacts = list_contacts(session)
    assert len(contacts) == 6
    assert sum(c.facts.get("condition", 0) for c in contacts) == 190


# --- HL7 examples --------------------------------------------------------------------------
def test_hl7_examples_skip_facts_of_absent_patients(workspace: Workspace, actor: Actor) -> None:
    summary = run_import(workspace, actor, [shared_data("fhir-r4-examples")])
    n_problems = len(summary.problems)
    assert n_problems == 0
    # example, pat2, f001, and the transaction Bundle's five (two keyed by urn:uuid fullUrl)
    assert by_status(summary, "created") == {
        "Patient": 8,
        "AllergyIntolerance": 1,
        "Appointment": 1,
        "Condition": 1,
        "Encounter": 1,
        "Immunization": 2,
        "Observation": 1,
        "Procedure": 1,
    }
    assert by_status(summary, "skipped") == {"Condition": 1, "MedicationRequest": 1}
    reasons = sorted(p.message for p in summary.skipped)
    assert reasons == [
        "patient reference Patient/f201 not found in this import or the database",
        "patient reference Patient/pat1 not found in this import or the database",
    ]
    assert {"Organization", "Practitioner", "Consent", "Parameters"} <= set(summary.ignored)
    with transaction(workspace.engine) as session:
        contact_id = contact_for(workspace, session, "fhir:Patient/example")
        assert contact_id is not None
        view = phi.read_contact(
            session, workspace.keyring, contact_id, actor=actor, purpose="test: importer round trip"
        )
    kinds = Counter(f["kind"] for f in view.facts)
    assert kinds == {
        "allergy": 1,
        "appointment": 1,
        "condition": 1,
        "encounter": 1,
        "immunization": 2,
        "observation": 1,
        "procedure": 1,
    }
    refused = [f for f in view.facts if f["kind"] == "immunization" and f["not_done"]]
    assert len(refused) == 1


# --- broken input --------------------------------------------------------------------------
@pytest.fixture
def broken_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    good = examples_file("patient-example.json")
    write_json(folder / "good.json", good)
    text = orjson.dumps(good, option=orjson.OPT_INDENT_2)
    (folder / "truncated.json").write_bytes(text[: len(text) // 2])
    bad = dict(good, id="other", birthDate="1980-02-31T99")
    write_json(
        folder / "bundle.json",
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": bad, "request": {"method": "POST", "url": "Patient"}}],
        },
    )
    return folder


def test_broken_input_rejects_everything(
    workspace: Workspace, actor: Actor, broken_folder: Path
) -> None:
    with pytest.raises(ImportRejected) as caught:
        run_import(workspace, actor, [broken_folder])
    wheres = [p.where for p in caught.value.problems]
    assert len(wheres) == 2
    assert re.search(r"truncated\.json line \d+, column \d+$", wheres[1])
    assert "malformed JSON" in caught.value.problems[1].message
    assert wheres[0].endswith("bundle.json $.entry[0].resource.birthDate")
    assert "1980-02-31T99" not in str(caught.value)
    with transaction(workspace.engine) as session:
        assert count_contacts(session) == 0
        assert session.scalar(select(func.count()).select_from(ImportRun)) == 0


def test_skip_invalid_imports_the_valid_files(
    workspace: Workspace, actor: Actor, broken_folder: Path
) -> None:
    summary = run_import(workspace, actor, [broken_folder], skip_invalid=True)
    assert len(summary.problems) == 2
    assert summary.counts["Patient"] == {"created": 1, "updated": 0, "unchanged": 0, "skipped": 1}
    assert summary.files == 3
    with transaction(workspace.engine) as session:
        assert count_contacts(session) == 1


def test_malformed_ndjson_line_names_file_and_line(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    source = shared_data("fhir-bulk-ndjson") / "Patient.000.ndjson"
    lines = source.read_bytes().splitlines(keepends=True)
    folder = tmp_path / "in"
    folder.mkdir()
    broken = folder / "Patient.000.ndjson"
    broken.write_bytes(lines[0] + lines[1][:40] + b"\n" + b"".join(lines[2:]))
    with pytest.raises(ImportRejected) as caught:
        run_import(workspace, actor, [folder])
    (problem,) = caught.value.problems
    assert re.search(r"Patient\.000\.ndjson line 2, column \d+$", problem.where)
    summary = run_import(workspace, actor, [broken], skip_invalid=True)
    assert by_status(summary, "created") == {"Patient": 5}


def test_missing_path_and_non_resource_json(tmp_path: Path) -> None:
    write_json(
        tmp_path / "manifest.json",
        {"transactionTime": "2024-01-01T00:00:00Z", "output": [], "request": "x"},
    )
    write_json(tmp_path / "list.json", [1, 2])
    result = read_fhir([tmp_path, tmp_path / "absent.json"])
    messages = {Path(p.where.split(" ")[0]).name: p.message for p in result.problems}
    assert messages == {
        "list.json": "expected a JSON object (a FHIR resource or Bundle)",
        "absent.json": "no such file or folder",
    }
    assert [Path(p.where).name for p in result.ignored_files] == ["manifest.json"]


def test_conditional_reference_statement_and_non_patient_subject(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    system = "http://hospital.example.org/mrn"
    patient = {
        "resourceType": "Patient",
        "id": "cond-1",
        "identifier": [
            {
                "type": {"coding": [{"code": "MR"}]},
                "system": system,
                "value": "MRN-0001",
            }
        ],
        "deceasedDateTime": "2020-03-04T05:06:07+00:00",
    }
    statement = {
        "resourceType": "MedicationStatement",
        "status": "active",
        "subject": {"reference": f"Patient?identifier={system}|MRN-0001"},
        "medicationCodeableConcept": {"text": "an uncoded medication"},
        "effectivePeriod": {"start": "2020-01-01", "end": "2020-02-01"},
    }
    group_obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "subject": {"reference": "Group/102"},
        "valueString": "warm",
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
            for r in (statement, group_obs, patient)
        ],
    }
    summary = run_import(workspace, actor, [write_json(tmp_path / "batch.json", bundle)])
    assert by_status(summary, "created") == {"Patient": 1, "MedicationStatement": 1}
    assert by_status(summary, "skipped") == {"Observation": 1}
    (skipped,) = summary.skipped
    assert skipped.message == "the subject is not a Patient"
    assert skipped.where.endswith("batch.json $.entry[1].resource")
    with transaction(workspace.engine) as session:
        contact_id = contact_for(workspace, session, "fhir:Patient/cond-1")
        assert contact_id is not None
        view = phi.read_contact(
            session, workspace.keyring, contact_id, actor=actor, purpose="test: round trip"
        )
    assert view.record["deceased"] == "2020-03-04"
    assert view.record["mrn"] == "MRN-0001"
    (fact,) = view.facts
    assert fact["kind"] == "medication"
    assert (fact["text"], fact["date"], fact["end"]) == (
        "an uncoded medication",
        "2020-01-01",
        "2020-02-01",
    )
