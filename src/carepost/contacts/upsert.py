"""Contacts and clinical facts written from structured rows (the REST API's bulk upsert),
checked like a CSV import's rows and written through the same ContactWriter.

All or nothing: every row is validated first; if any is invalid, `RowsInvalid` lists
every problem as {"row", "pointer", "detail"} (the field, never its value) and nothing
is written. A client fixes its rows and sends the batch again; with an Idempotency-Key
a failed batch does not use the key up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock
from carepost.contacts.importers.csv_import import _ATTR_NAME, FIELDS, convert_values
from carepost.contacts.models import Contact, ContactKey
from carepost.contacts.phi import ContactNotFound, ContactShredded
from carepost.contacts.record import FACT_KINDS, Record
from carepost.contacts.service import record_import
from carepost.contacts.store import ContactInput, ContactWriter, FactInput, Outcome
from carepost.staff.principal import Principal

MAX_ROWS = 1000


class RowsInvalid(ValueError):
    """Per-row problems of a batch; nothing was written."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the rows; nothing was written")

    def as_dict(self) -> dict[str, Any]:
        return {"errors": self.problems}


@dataclass(frozen=True)
class ContactRow:
    """One row: FIELDS names to text (None or empty: no value), and attributes."""

    values: Mapping[str, str | None]
    attributes: Mapping[str, str]


def _digest(rows: Sequence[ContactRow]) -> str:
    """What the run row records for its input: a digest, as an import does for a file."""
    data = [[dict(r.values), dict(r.attributes)] for r in rows]
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def upsert_contacts(
    session: Session,
    ring: Any,
    rows: Sequence[ContactRow],
    *,
    actor: Actor,
    now: datetime,
    source_system: str = "api",
    principal: Principal | None = None,
) -> tuple[str, list[Outcome]]:
    """Validate every row, then upsert them all (matched by external id, else by email):
    the import run's id and each row's outcome. Raises RowsInvalid before writing."""
    if principal is not None:
        principal.require("contacts:write")
    if len(rows) > MAX_ROWS:
        raise RowsInvalid([{"row": None, "pointer": "/rows", "detail": f"at most {MAX_ROWS}"}])
    inputs: list[ContactInput] = []
    problems: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        values: dict[str, str] = {}
        for name, value in row.values.items():
            if name not in FIELDS:
                problems.append(_problem(i, name, "not a contact field"))
            elif value is not None and value.strip():
                values[name] = value.strip()
        attrs: dict[str, str] = {}
        for name, value in row.attributes.items():
            if not _ATTR_NAME.match(name):
                problems.append(_problem(i, f"attributes/{name}", "not an attribute name"))
            elif value.strip():
                attrs[name] = value.strip()
        item, errors = convert_values(
            values, attrs, source_system=source_system, today=now.date(), origin=f"row {i}"
        )
        problems.extend(_problem(i, field, message) for field, message in errors)
        if item is not None:
            inputs.append(item)
    if problems:
        raise RowsInvalid(problems)
    writer = ContactWriter(session, ring, now=now, source="api")
    outcomes = writer.upsert_contacts(inputs)
    run_id = record_import(
        session,
        kind="api",
        counts=writer.counts,
        started_at=now,
        actor=actor,
        inputs=[_digest(rows)],
        clock=lambda: now,
    )
    return run_id, outcomes


def _problem(row: int, field: str, detail: str) -> dict[str, Any]:
    pointer = f"/rows/{row}/{field}" if field else f"/rows/{row}"
    return {"row": row, "pointer": pointer, "detail": detail}


@dataclass(frozen=True)
class FactRow:
    source_id: str  # the fact's id in the client's system: a second write updates it
    kind: str
    payload: Record  # code, status, date, value, unit... (see contacts/record.py)


def upsert_facts(
    session: Session,
    ring: Any,
    contact_id: str,
    facts: Sequence[FactRow],
    *,
    actor: Actor,
    now: datetime,
    clock: Clock,
    principal: Principal | None = None,
) -> dict[str, int]:
    """Add or update clinical facts of one contact, sealed under its key; counts by
    outcome. Audited as `contacts.facts_upserted` (ids and counts)."""
    if principal is not None:
        principal.require("contacts:write")
    problems = [
        _problem(i, "kind", f"one of {', '.join(FACT_KINDS)}")
        for i, f in enumerate(facts)
        if f.kind not in FACT_KINDS
    ]
    if problems:
        raise RowsInvalid(problems)
    if session.get(Contact, contact_id) is None:
        raise ContactNotFound(f"no contact with id {contact_id}")
    if session.get(ContactKey, contact_id) is None:
        raise ContactShredded(f"contact {contact_id} was crypto-shredded")
    writer = ContactWriter(session, ring, now=now, source="api")
    outcomes = writer.upsert_facts(
        [
            FactInput(
                contact_id, f.kind, f"api:{f.source_id}", {**f.payload, "kind": f.kind}, "Fact"
            )
            for f in facts
        ]
    )
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    audit.append(
        session,
        actor=actor,
        action="contacts.facts_upserted",
        subjects=[contact_id],
        details=counts,
        clock=clock,
    )
    return counts
