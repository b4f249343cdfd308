"""The plaintext shape of a contact's PHI and of a clinical fact, before sealing.

Both are plain dicts serialized with orjson: importers build them at tens of thousands per
second, where a validating model per row would cost more than the encryption does.

Contact record (version 1), every key optional except "v":
  name {given[], family, prefix[], suffix[]}, emails[], phones[], birth_date (YYYY-MM-DD),
  sex (female|male|other|unknown), gender_identity, address {lines[], city, state,
  postal_code, country}, language, insurance_type, mrn, deceased (bool or date),
  identifiers [{system, value}], attributes {name: value}

Clinical fact payload: {"kind": one of FACT_KINDS, "code": {system, code, display},
  "codes": [...all codings...], "status", "date", and kind-specific fields (value, unit,
  onset, abatement, end, no_show, ...)}
"""

from __future__ import annotations

from typing import Any

import orjson

RECORD_VERSION = 1

SEXES = ("female", "male", "other", "unknown")

FACT_KINDS = (
    "condition",
    "medication",
    "observation",
    "immunization",
    "encounter",
    "appointment",
    "procedure",
    "allergy",
)

CODE_SYSTEMS = {
    "http://snomed.info/sct": "SNOMED-CT",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://loinc.org": "LOINC",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://www.ama-assn.org/go/cpt": "CPT",
}

Record = dict[str, Any]


def canonical(record: Record) -> bytes:
    """Deterministic bytes: the same record always seals from (and fingerprints to) these."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def short_system(system: str | None) -> str | None:
    if system is None:
        return None
    return CODE_SYSTEMS.get(system, system)
