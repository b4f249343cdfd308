"""FHIR R4 import: Bundles (any type), single resources, Bulk Data NDJSON, and folders of them.

Reading validates every resource with the fhir.resources R4B models and maps Patients to
contacts and clinical resources to facts; nothing is written until every input has been
read. A fact names its patient by reference, resolved after reading (an export may list a
fact file before its Patient file): first against the patients of this import, then
against contacts stored by earlier FHIR imports, by source key `fhir:Patient/<id>`.

Problems say where (file, line, JSON path) and what (the error type), never the value:
values are PHI, and pydantic messages can echo them.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError
from sqlalchemy.orm import Session

from carepost.audit.actor import Actor
from carepost.contacts.importers.errors import ImportProblem, ImportRejected
from carepost.contacts.record import RECORD_VERSION, Record, short_system
from carepost.contacts.service import record_import
from carepost.contacts.store import ContactInput, ContactWriter, FactInput
from carepost.crypto.blind_index import normalize_email, normalize_identifier, normalize_phone
from carepost.crypto.keyring import KeyRing

Json = dict[str, Any]

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
ABSTRACT_TYPES = frozenset({"Resource", "DomainResource"})
NOT_FOUND = "patient reference {ref} not found in this import or the database"
BULK_NAME_HINT = (
    "not named <ResourceType>[.<n>].ndjson (the Bulk Data convention); "
    "name the file explicitly to read it"
)

_BOM = b"\xef\xbb\xbf"
_TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_BULK_NAME = re.compile(r"^([A-Z][A-Za-z]{1,63})(?:\.\d+)?(?i:\.ndjson)$")
_TYPED_REF = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([^/?#]+)(?:/_history/[^/?#]+)?$")
_LOC_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


# --- results -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PatientRef:
    """How a fact names its patient. `text` is what reports show: a reference such as
    Patient/123 or urn:uuid:..., never an identifier value."""

    text: str
    reference: str | None = None
    identifier: tuple[str | None, str] | None = None


@dataclass
class PendingFact:
    """A clinical fact waiting for its patient's contact id."""

    kind: str
    source_key: str
    payload: Record
    resource_type: str
    origin: str  # file and JSON path or line; never PHI
    refs: list[PatientRef]
    no_patient: str = ""  # why the resource names no patient, when it names none
    medication_ref: str | None = None  # a Medication resolved once every file is read
    patient_keys: list[str] = field(default_factory=list)  # candidate source keys, in order


@dataclass
class FhirReadResult:
    inputs: list[ContactInput] = field(default_factory=list)
    facts: list[PendingFact] = field(default_factory=list)
    problems: list[ImportProblem] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)  # read, valid, not imported
    ignored_files: list[ImportProblem] = field(default_factory=list)
    invalid: Counter[str] = field(default_factory=Counter)  # failed validation, by type
    digests: list[str] = field(default_factory=list)  # SHA-256 of each file read

    @property
    def total(self) -> int:
        return len(self.inputs) + len(self.facts)


@dataclass
class FhirImportSummary:
    run_id: str
    counts: dict[str, dict[str, int]]
    ignored: dict[str, int]
    ignored_files: list[ImportProblem]
    problems: list[ImportProblem]
    skipped: list[ImportProblem]
    files: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "files": self.files,
            "counts": self.counts,
            "ignored": self.ignored,
            "ignored_files": [p.as_dict() for p in self.ignored_files],
            "invalid": [p.as_dict() for p in self.problems],
            "skipped": [p.as_dict() for p in self.skipped],
        }


# --- validation helpers ------------------------------------------------------------------
@cache
def _model(resource_type: str) -> Any:
    """The R4B model class of a concrete resource type, or None."""
    if not _TYPE_NAME.match(resource_type) or resource_type in ABSTRACT_TYPES:
        return None
    try:
        cls = get_fhir_model_class(resource_type)
    except ValueError:
        return None
    return cls if isinstance(cls, type) and issubclass(cls, Resource) else None


def bulk_file_type(name: str) -> str | None:
    """The resource type a Bulk Data file name announces (`Patient.000.ndjson`), or None."""
    match = _BULK_NAME.match(name)
    if match and _model(match.group(1)) is not None:
        return match.group(1)
    return None


def _json_path(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "resource_type":
            out += ".resourceType"
        else:
            # A dict key from the input can be anything, PHI included: show field names only.
            out += f".{part}" if _LOC_PART.match(part) else ".<key>"
    return out


def _leaves(value: Any, out: list[str], limit: int = 200) -> list[str]:
    if len(out) >= limit:
        return out
    if isinstance(value, dict):
        for item in value.values():
            _leaves(item, out, limit)
    elif isinstance(value, list | tuple):
        for item in value:
            _leaves(item, out, limit)
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value)
        if len(text) >= 3:
            out.append(text)
    return out


def describe_error(err: Any) -> str:
    """The error type, and pydantic's message only when it does not echo the input."""
    kind = str(err.get("type", "invalid"))
    msg = " ".join(str(err.get("msg", "")).split())[:200]
    if not msg or any(leaf in msg for leaf in _leaves(err.get("input"), [])):
        return f"invalid value ({kind})"
    return f"{msg} ({kind})"


def _is_bulk_manifest(doc: Json) -> bool:
    return "transactionTime" in doc and "output" in doc


def _without_resource(entry: Any) -> Any:
    if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
        return {k: v for k, v in entry.items() if k != "resource"}
    return entry


# --- mapping helpers ---------------------------------------------------------------------
def _put(record: Record, key: str, value: Any) -> None:
    if value is not None and value != "" and value != [] and value != {}:
        record[key] = value


def _prefer(items: list[Json], uses: Sequence[str]) -> Json:
    for use in uses:
        for item in items:
            if item.get("use") == use:
                return item
    return next((i for i in items if i.get("use") != "old"), items[0])


def _coding(c: Json) -> Record:
    return {
        "system": short_system(c.get("system")),
        "code": c.get("code"),
        "display": c.get("display"),
    }


def _first_coding(cc: Json | None) -> Record | None:
    codings = (cc or {}).get("coding") or []
    return _coding(codings[0]) if codings else None


def _first_code(cc: Json | None) -> str | None:
    for coding in (cc or {}).get("coding") or []:
        code: str | None = coding.get("code")
        if code:
            return code
    return None


def _first(items: list[Json] | None) -> Json | None:
    return items[0] if items else None


def _concept(*concepts: Json | None) -> Record:
    """{"code": first coding, "codes": all codings}, plus "text" when nothing is coded."""
    codings = [_coding(c) for cc in concepts if cc for c in cc.get("coding") or []]
    out: Record = {"code": codings[0] if codings else None, "codes": codings}
    text = next((cc["text"] for cc in concepts if cc and cc.get("text")), None)
    if text and not codings:
        out["text"] = text
    return out


def _when(raw: Json, stem: str) -> tuple[str | None, str | None]:
    """(start, end) of a choice element such as onset[x], effective[x] or performed[x]."""
    for suffix in ("DateTime", "Instant", "Date"):
        value: str | None = raw.get(stem + suffix)
        if value:
            return value, None
    period: Json = raw.get(stem + "Period") or {}
    return period.get("start"), period.get("end")


def _base(kind: str, concept: Record, status: str | None, date: str | None) -> Record:
    return {"kind": kind, **concept, "status": status, "date": date}


def _extra(payload: Record, values: dict[str, Any]) -> Record:
    for key, value in values.items():
        _put(payload, key, value)
    return payload


def _contained(raw: Json, reference: str | None) -> Json | None:
    if not reference or not reference.startswith("#"):
        return None
    for item in raw.get("contained") or []:
        if item.get("id") == reference[1:]:
            found: Json = item
            return found
    return None


# --- Patient -> contact record -----------------------------------------------------------
def _name(names: list[Json] | None) -> Record | None:
    if not names:
        return None
    chosen = _prefer(names, ("official", "usual"))
    out: Record = {}
    _put(out, "given", list(chosen.get("given") or []))
    _put(out, "family", chosen.get("family"))
    _put(out, "prefix", list(chosen.get("prefix") or []))
    _put(out, "suffix", list(chosen.get("suffix") or []))
    if not out:
        _put(out, "text", chosen.get("text"))
    return out or None


def _telecom(points: list[Json] | None) -> tuple[list[str], list[str]]:
    emails: list[str] = []
    phones: list[str] = []
    for point in points or []:
        value = point.get("value")
        if not value or point.get("use") == "old":
            continue
        if point.get("system") == "email":
            email = normalize_email(value)
            if "@" in email and email not in emails:
                emails.append(email)
        elif point.get("system") in ("phone", "sms"):
            phone = normalize_phone(value)
            if 7 <= len(phone) <= 15 and phone not in phones:
                phones.append(phone)
    return emails, phones


def _address(addresses: list[Json] | None) -> Record | None:
    if not addresses:
        return None
    chosen = _prefer(addresses, ("home",))
    out: Record = {}
    _put(out, "lines", list(chosen.get("line") or []))
    for source, target in (
        ("city", "city"),
        ("state", "state"),
        ("postalCode", "postal_code"),
        ("country", "country"),
    ):
        _put(out, target, chosen.get(source))
    if not out:
        _put(out, "text", chosen.get("text"))
    return out or None


def _language(communication: list[Json] | None) -> str | None:
    ordered = sorted(communication or [], key=lambda c: not c.get("preferred", False))
    for item in ordered:
        language: Json = item.get("language") or {}
        code = _first_code(language) or language.get("text")
        if code:
            return str(code).lower()
    return None


def _mrn(identifiers: list[Json] | None) -> str | None:
    for ident in identifiers or []:
        codes = {c.get("code") for c in (ident.get("type") or {}).get("coding") or []}
        value: str | None = ident.get("value")
        if "MR" in codes and value:
            return value
    return None


def _deceased(raw: Json) -> bool | str | None:
    """True/False, or the date of death (YYYY-MM-DD, or as partial as the source)."""
    if "deceasedBoolean" in raw:
        return bool(raw["deceasedBoolean"])
    value: str | None = raw.get("deceasedDateTime")
    return value[:10] if value else None


def patient_record(raw: Json) -> tuple[Record, list[tuple[str, str]]]:
    """A Patient resource as a contact record (record.py) and its lookups."""
    record: Record = {"v": RECORD_VERSION}
    lookups: list[tuple[str, str]] = []
    _put(record, "name", _name(raw.get("name")))
    emails, phones = _telecom(raw.get("telecom"))
    _put(record, "emails", emails)
    _put(record, "phones", phones)
    lookups += [("email", e) for e in emails] + [("phone", p) for p in phones]
    _put(record, "birth_date", raw.get("birthDate"))
    _put(record, "sex", raw.get("gender"))
    _put(record, "address", _address(raw.get("address")))
    _put(record, "language", _language(raw.get("communication")))
    _put(record, "deceased", _deceased(raw))
    mrn = _mrn(raw.get("identifier"))
    if mrn:
        record["mrn"] = mrn
        lookups.append(("mrn", normalize_identifier(mrn)))
    _put(
        record,
        "identifiers",
        [
            {"system": i.get("system"), "value": i["value"]}
            for i in raw.get("identifier") or []
            if i.get("value")
        ],
    )
    return record, lookups


# --- clinical resources -> fact payloads -------------------------------------------------
def condition_payload(raw: Json) -> Record:
    onset, _ = _when(raw, "onset")
    abatement, _ = _when(raw, "abatement")
    recorded = raw.get("recordedDate")
    payload = _base(
        "condition",
        _concept(raw.get("code")),
        _first_code(raw.get("clinicalStatus")),
        onset or recorded,
    )
    return _extra(
        payload,
        {
            "verification": _first_code(raw.get("verificationStatus")),
            "category": _first_code(_first(raw.get("category"))),
            "onset": onset,
            "abatement": abatement,
            "recorded": recorded,
        },
    )


def medication_payload(raw: Json) -> Record:
    """MedicationRequest or MedicationStatement. A contained Medication is read here; one
    elsewhere in the import is filled in by the reader once every file is read."""
    ref: Json = raw.get("medicationReference") or {}
    contained = _contained(raw, ref.get("reference"))
    concept = _concept(contained.get("code") if contained else raw.get("medicationCodeableConcept"))
    if not concept["codes"] and ref.get("display"):
        concept["text"] = ref["display"]
    if raw.get("resourceType") == "MedicationRequest":
        date, end = raw.get("authoredOn"), None
    else:
        date, end = _when(raw, "effective")
        date = date or raw.get("dateAsserted")
    payload = _base("medication", concept, raw.get("status"), date)
    return _extra(payload, {"intent": raw.get("intent"), "end": end})


def _value(item: Json) -> Record:
    quantity: Json | None = item.get("valueQuantity")
    if quantity is not None:
        unit = quantity.get("unit") or quantity.get("code")
        return {"value": quantity.get("value"), "unit": unit}
    concept: Json | None = item.get("valueCodeableConcept")
    if concept is not None:
        coding = _first_coding(concept)
        return {"value": concept.get("text") or (coding or {}).get("display"), "value_code": coding}
    for suffix in ("String", "Boolean", "Integer", "DateTime", "Time"):
        if item.get("value" + suffix) is not None:
            return {"value": item["value" + suffix]}
    return {}


def observation_payload(raw: Json) -> Record:
    date, _ = _when(raw, "effective")
    payload = _base(
        "observation", _concept(raw.get("code")), raw.get("status"), date or raw.get("issued")
    )
    _extra(payload, {"category": _first_code(_first(raw.get("category"))), **_value(raw)})
    components = [
        _extra({"code": _first_coding(c.get("code"))}, _value(c))
        for c in raw.get("component") or []
    ]
    _put(payload, "components", components)
    return payload


def immunization_payload(raw: Json) -> Record:
    date, _ = _when(raw, "occurrence")
    status = raw.get("status")
    payload = _base("immunization", _concept(raw.get("vaccineCode")), status, date)
    payload["not_done"] = status == "not-done"
    return _extra(payload, {"status_reason": _first_code(raw.get("statusReason"))})


def encounter_payload(raw: Json) -> Record:
    period: Json = raw.get("period") or {}
    payload = _base(
        "encounter", _concept(*raw.get("type") or []), raw.get("status"), period.get("start")
    )
    klass = raw.get("class")
    return _extra(payload, {"end": period.get("end"), "class": _coding(klass) if klass else None})


def appointment_payload(raw: Json) -> Record:
    status = raw.get("status")
    payload = _base(
        "appointment", _concept(*raw.get("serviceType") or []), status, raw.get("start")
    )
    payload["no_show"] = status == "noshow"
    return _extra(
        payload,
        {"end": raw.get("end"), "appointment_type": _first_coding(raw.get("appointmentType"))},
    )


def procedure_payload(raw: Json) -> Record:
    date, end = _when(raw, "performed")
    payload = _base("procedure", _concept(raw.get("code")), raw.get("status"), date)
    return _extra(payload, {"end": end})


def allergy_payload(raw: Json) -> Record:
    onset, _ = _when(raw, "onset")
    recorded = raw.get("recordedDate")
    payload = _base(
        "allergy",
        _concept(raw.get("code")),
        _first_code(raw.get("clinicalStatus")),
        onset or recorded,
    )
    return _extra(
        payload,
        {
            "verification": _first_code(raw.get("verificationStatus")),
            "category": raw.get("category"),
            "criticality": raw.get("criticality"),
            "type": raw.get("type"),
        },
    )


PAYLOADS: dict[str, Callable[[Json], Record]] = {
    "AllergyIntolerance": allergy_payload,
    "Condition": condition_payload,
    "MedicationRequest": medication_payload,
    "MedicationStatement": medication_payload,
    "Observation": observation_payload,
    "Immunization": immunization_payload,
    "Encounter": encounter_payload,
    "Appointment": appointment_payload,
    "Procedure": procedure_payload,
}


# --- references ----------------------------------------------------------------------------
def source_key(resource_type: str, raw: Json, full_url: str | None) -> str:
    """`fhir:<Type>/<id>`; without an id, the bundle fullUrl; else a digest of the JSON."""
    rid = raw.get("id")
    if rid:
        return f"fhir:{resource_type}/{rid}"
    if full_url:
        match = _TYPED_REF.search(full_url)
        if match and match.group(1) == resource_type:
            return f"fhir:{resource_type}/{match.group(2)}"
        return f"fhir:{full_url}"
    digest = hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"fhir:{resource_type}/sha256:{digest}"


def _as_patient_ref(obj: Any) -> PatientRef | None:
    """A Reference that may name a Patient, or None when it names something else."""
    if not isinstance(obj, dict) or obj.get("type") not in (None, "Patient"):
        return None
    ref = obj.get("reference")
    if isinstance(ref, str) and ref:
        if ref.startswith("#"):
            return None  # a contained resource, not a patient of this import
        if "?" in ref:  # conditional: Patient?identifier=system|value (value is PHI)
            head = ref.split("?", 1)[0].rsplit("/", 1)[-1]
            return PatientRef("Patient?(conditional)", ref) if head == "Patient" else None
        match = _TYPED_REF.search(ref)
        if match and match.group(1) != "Patient":
            return None
        return PatientRef(ref, ref)
    ident = obj.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        return PatientRef("identifier reference", None, (ident.get("system"), ident["value"]))
    return None


def patient_refs(raw: Json, resource_type: str) -> tuple[list[PatientRef], str]:
    """The references that may name the resource's patient, or why there are none."""
    if resource_type == "Appointment":
        actors = [p.get("actor") for p in raw.get("participant") or []]
        refs = [r for r in map(_as_patient_ref, actors) if r]
        return refs, "" if refs else "no Patient among the appointment's participants"
    subject = raw.get("subject") or raw.get("patient")
    ref = _as_patient_ref(subject)
    if ref:
        return [ref], ""
    return [], ("the subject is not a Patient" if subject else "no subject or patient reference")


# --- the reader ----------------------------------------------------------------------------
class _Reader:
    def __init__(self) -> None:
        self.result = FhirReadResult()
        self.full_urls: dict[str, str] = {}  # fullUrl of a Patient entry -> source key
        self.identifiers: dict[tuple[str | None, str], str] = {}  # Patient identifier -> key
        self.medications: dict[str, Json] = {}  # Medication/<id> or fullUrl -> code
        self.seen: set[Path] = set()

    def problem(self, where: str, message: str, resource_type: str = "") -> None:
        self.result.problems.append(ImportProblem(where, message, resource_type))

    # files
    def add_path(self, path: Path) -> None:
        if path.is_dir():
            self.add_folder(path)
        elif path.is_file():
            self.read_file(path, ndjson=path.suffix.lower() in NDJSON_SUFFIXES)
        else:
            self.problem(str(path), "no such file or folder")

    def add_folder(self, folder: Path) -> None:
        try:
            children = sorted(folder.iterdir())
        except OSError as exc:
            self.problem(str(folder), f"cannot list the folder ({exc.strerror or 'error'})")
            return
        for child in children:
            suffix = child.suffix.lower()
            if child.name.startswith(".") or not child.is_file():
                continue
            if suffix == ".json":
                self.read_file(child, ndjson=False)
            elif suffix == ".ndjson" and bulk_file_type(child.name):
                self.read_file(child, ndjson=True)
            elif suffix == ".ndjson":
                self.result.ignored_files.append(ImportProblem(str(child), BULK_NAME_HINT))

    def read_file(self, path: Path, *, ndjson: bool) -> None:
        resolved = path.resolve()
        if resolved in self.seen:
            return
        self.seen.add(resolved)
        try:
            digest = self.read_ndjson(path) if ndjson else self.read_json(path)
        except OSError as exc:
            self.problem(str(path), f"cannot read the file ({exc.strerror or type(exc).__name__})")
            return
        self.result.digests.append(digest)

    def read_json(self, path: Path) -> str:
        data = path.read_bytes()
        doc = self.parse(data.removeprefix(_BOM), str(path), None)
        if doc is not None:
            self.take(doc, str(path), "$", None)
        return hashlib.sha256(data).hexdigest()

    def read_ndjson(self, path: Path) -> str:
        digest = hashlib.sha256()
        label = str(path)
        with path.open("rb") as fh:
            for number, raw_line in enumerate(fh, start=1):
                digest.update(raw_line)
                line = raw_line.removeprefix(_BOM).strip()
                if not line:
                    continue
                doc = self.parse(line, label, number)
                if doc is not None:
                    self.take(doc, f"{label} line {number}", "$", None)
        return digest.hexdigest()

    def parse(self, data: bytes, label: str, line: int | None) -> Json | None:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self.problem(
                f"{label} line {line or exc.lineno}, column {exc.colno}",
                f"malformed JSON ({exc.msg})",
            )
            return None
        if not isinstance(doc, dict):
            where = label if line is None else f"{label} line {line}"
            self.problem(where, "expected a JSON object (a FHIR resource or Bundle)")
            return None
        return doc

    # resources
    def take(self, doc: Json, at: str, path: str, full_url: str | None) -> None:
        rtype = doc.get("resourceType")
        if not isinstance(rtype, str):
            if path == "$" and _is_bulk_manifest(doc):
                self.result.ignored_files.append(ImportProblem(at, "a Bulk Data manifest"))
            else:
                self.problem(f"{at} {path}", "not a FHIR resource (no resourceType)")
        elif rtype == "Bundle":
            self.take_bundle(doc, at, path)
        elif self.valid(doc, rtype, at, path):
            self.take_resource(doc, rtype, f"{at} {path}", full_url)

    def valid(self, doc: Json, rtype: str, at: str, path: str) -> bool:
        model = _model(rtype)
        if model is None and _TYPE_NAME.match(rtype):
            # A type this FHIR version does not define (another version's, or a custom
            # one) is not what carepost imports: count it, as any other ignored type.
            self.result.ignored[rtype] += 1
            return False
        if model is None:
            self.problem(f"{at} {path}.resourceType", "not a FHIR resource type name", "?")
            self.result.invalid["?"] += 1
            return False
        try:
            model.model_validate(doc)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                self.problem(f"{at} {_json_path(path, err['loc'])}", describe_error(err), rtype)
            self.result.invalid[rtype] += 1
            return False
        return True

    def take_bundle(self, doc: Json, at: str, path: str) -> None:
        entries = doc.get("entry")
        shell = dict(doc)
        if isinstance(entries, list):  # the entries' resources are validated one by one
            shell["entry"] = [_without_resource(e) for e in entries]
        if not self.valid(shell, "Bundle", at, path):
            return
        for idx, entry in enumerate(entries or []):
            resource = entry.get("resource")
            if isinstance(resource, dict):  # request-only entries (DELETE, GET) have none
                self.take(resource, at, f"{path}.entry[{idx}].resource", entry.get("fullUrl"))

    def take_resource(self, raw: Json, rtype: str, origin: str, full_url: str | None) -> None:
        if rtype == "Patient":
            self.take_patient(raw, origin, full_url)
        elif rtype in PAYLOADS:
            self.take_fact(raw, rtype, origin, full_url)
        else:
            if rtype == "Medication":
                self.remember_medication(raw, full_url)
            self.result.ignored[rtype] += 1

    def take_patient(self, raw: Json, origin: str, full_url: str | None) -> None:
        key = source_key("Patient", raw, full_url)
        record, lookups = patient_record(raw)
        self.result.inputs.append(ContactInput(key, record, lookups, "Patient", origin))
        if full_url:
            self.full_urls[full_url] = key
        for ident in raw.get("identifier") or []:
            if ident.get("value"):
                self.identifiers[(ident.get("system"), ident["value"])] = key
                self.identifiers.setdefault((None, ident["value"]), key)

    def take_fact(self, raw: Json, rtype: str, origin: str, full_url: str | None) -> None:
        payload = PAYLOADS[rtype](raw)
        refs, why = patient_refs(raw, rtype)
        med: str | None = (raw.get("medicationReference") or {}).get("reference")
        self.result.facts.append(
            PendingFact(
                payload["kind"],
                source_key(rtype, raw, full_url),
                payload,
                rtype,
                origin,
                refs,
                why,
                med if med and not med.startswith("#") else None,
            )
        )

    def remember_medication(self, raw: Json, full_url: str | None) -> None:
        code: Json = raw.get("code") or {}
        if raw.get("id"):
            self.medications[f"Medication/{raw['id']}"] = code
        if full_url:
            self.medications[full_url] = code

    # after every file is read
    def finish(self) -> FhirReadResult:
        for fact in self.result.facts:
            if fact.medication_ref:
                self.fill_medication(fact, fact.medication_ref)
            keys = [k for ref in fact.refs for k in self.keys_for(ref)]
            fact.patient_keys = list(dict.fromkeys(keys))
        return self.result

    def fill_medication(self, fact: PendingFact, ref: str) -> None:
        match = _TYPED_REF.search(ref)
        code = self.medications.get(ref)
        if code is None and match and match.group(1) == "Medication":
            code = self.medications.get(f"Medication/{match.group(2)}")
        if code:
            text = fact.payload.pop("text", None)
            fact.payload.update(_concept(code))
            if not fact.payload["codes"] and text:
                fact.payload["text"] = text

    def keys_for(self, ref: PatientRef) -> list[str]:
        """Candidate source keys of the patient a reference names, best first."""
        if ref.identifier is not None:
            return self.by_identifier(*ref.identifier)
        target = ref.reference or ""
        if target in self.full_urls:
            return [self.full_urls[target]]
        if target.startswith("urn:uuid:"):  # Synthea: fullUrl urn:uuid:<id> of Patient/<id>
            return [f"fhir:{target}", f"fhir:Patient/{target.removeprefix('urn:uuid:')}"]
        if target.startswith("urn:"):
            return [f"fhir:{target}"]
        if "?" in target:  # conditional: Patient?identifier=[system|]value
            tokens = parse_qs(target.split("?", 1)[1]).get("identifier", [])
            system, _, value = tokens[0].rpartition("|") if tokens else ("", "", "")
            return self.by_identifier(system or None, value) if value else []
        match = _TYPED_REF.search(target)
        return [f"fhir:Patient/{match.group(2)}"] if match else []

    def by_identifier(self, system: str | None, value: str) -> list[str]:
        key = self.identifiers.get((system, value))
        return [key] if key else []


def read_fhir(paths: Iterable[Path | str]) -> FhirReadResult:
    """Read and validate every input; write nothing. Folders give their `*.json` files and
    their Bulk Data `<ResourceType>[.<n>].ndjson` files (other NDJSON files are listed as
    ignored); a file named explicitly is always read."""
    reader = _Reader()
    for path in paths:
        reader.add_path(Path(path))
    return reader.finish()


# --- writing -------------------------------------------------------------------------------
def _write_patients(
    writer: ContactWriter, inputs: list[ContactInput]
) -> tuple[dict[str, str], list[ImportProblem]]:
    outcomes = writer.upsert_contacts(inputs)
    ids: dict[str, str] = {}
    skipped: list[ImportProblem] = []
    for item, outcome in zip(inputs, outcomes, strict=True):
        if outcome.contact_id and item.source_key:
            ids[item.source_key] = outcome.contact_id
        elif outcome.status == "skipped":
            skipped.append(ImportProblem(item.origin, outcome.reason, item.resource_type))
    return ids, skipped


def _stored_contacts(writer: ContactWriter, keys: Iterable[str]) -> dict[str, str]:
    """Source key -> contact id, for patients stored by earlier imports."""
    by_bi = {writer.source_bi(key): key for key in keys}
    found = writer.resolve("source", list(by_bi))
    return {by_bi[bi]: cids[0] for bi, cids in found.items() if cids}


def _resolve_facts(
    writer: ContactWriter, facts: list[PendingFact], ids: dict[str, str]
) -> tuple[list[FactInput], list[tuple[PendingFact, str]]]:
    wanted = {key for fact in facts for key in fact.patient_keys if key not in ids}
    known = {**_stored_contacts(writer, wanted), **ids}
    ready: list[FactInput] = []
    unresolved: list[tuple[PendingFact, str]] = []
    for fact in facts:
        cid = next((known[k] for k in fact.patient_keys if k in known), None)
        if cid is not None:
            ready.append(
                FactInput(cid, fact.kind, fact.source_key, fact.payload, fact.resource_type)
            )
        elif fact.no_patient:
            unresolved.append((fact, fact.no_patient))
        else:
            refs = ", ".join(ref.text for ref in fact.refs)
            unresolved.append((fact, NOT_FOUND.format(ref=refs)))
    return ready, unresolved


def write_fhir(
    session: Session,
    ring: KeyRing,
    result: FhirReadResult,
    *,
    actor: Actor,
    now: datetime,
    batch_size: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> FhirImportSummary:
    """Write what `read_fhir` read, patients first, in the caller's transaction."""
    writer = ContactWriter(
        session, ring, now=now, source="fhir", batch_size=batch_size, progress=progress
    )
    ids, skipped = _write_patients(writer, result.inputs)
    ready, unresolved = _resolve_facts(writer, result.facts, ids)
    writer.upsert_facts(ready)
    for fact, reason in unresolved:
        writer.counts.add(fact.resource_type, "skipped")
        skipped.append(ImportProblem(fact.origin, reason, fact.resource_type))
    for rtype, n in sorted(result.invalid.items()):
        writer.counts.add(rtype, "skipped", n)
    run_id = record_import(
        session,
        kind="fhir",
        counts=writer.counts,
        started_at=now,
        actor=actor,
        inputs=result.digests,
        ignored=dict(result.ignored),
    )
    return FhirImportSummary(
        run_id,
        writer.counts.by_type,
        dict(sorted(result.ignored.items())),
        result.ignored_files,
        result.problems,
        skipped,
        len(result.digests),
    )


def import_fhir(
    session: Session,
    ring: KeyRing,
    paths: Iterable[Path | str],
    *,
    actor: Actor,
    now: datetime,
    skip_invalid: bool,
    batch_size: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> FhirImportSummary:
    """Validate every input, then upsert in the caller's transaction (never commits).

    Raises ImportRejected before writing anything when an input is invalid and
    skip_invalid is off (or when nothing valid is left to import); with it, invalid
    files and resources are reported and the rest are written.
    """
    result = read_fhir(paths)
    if result.problems and (not skip_invalid or result.total == 0):
        raise ImportRejected(result.problems)
    return write_fhir(
        session, ring, result, actor=actor, now=now, batch_size=batch_size, progress=progress
    )
