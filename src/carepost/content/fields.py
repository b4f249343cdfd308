"""The merge fields a template may use, and where each PHI field's value comes from.

Minimum necessary (45 CFR 164.502(b)): a template declares the PHI fields it uses and the
render context holds those and nothing else, so a template cannot print a diagnosis it
never declared, and a reviewer reads the declaration to know what a campaign discloses.

PHI fields are computed from a contact's decrypted record and clinical facts (shapes in
contacts/record.py) at a given time; `attr_<name>` reads a custom attribute and
`data_<name>` a value supplied with a one-off message. Everything in `NON_PHI_FIELDS` is
about the sender or the message, never the patient.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

Record = Mapping[str, Any]
Facts = Sequence[Mapping[str, Any]]
Extractor = Callable[[Record, Facts, datetime], Any]

NON_PHI_FIELDS = frozenset(
    {
        "unsubscribe_url",
        "preferences_url",
        "portal_url",
        "sender_name",
        "sender_postal_address",
        "organization_name",
        "campaign_name",
        "current_year",
    }
)

# URL-valued fields that may stand alone as a link's href (everything else in an href is
# refused: a merge field inside a URL would put it in logs and proxies along the way).
URL_FIELDS = frozenset({"unsubscribe_url", "preferences_url", "portal_url"})

_DYNAMIC = re.compile(r"^(attr|data)_[a-z][a-z0-9_]{0,62}$")


def _given(record: Record) -> str | None:
    given = (record.get("name") or {}).get("given") or []
    return str(given[0]) if given else None


def _family(record: Record) -> str | None:
    family = (record.get("name") or {}).get("family")
    return str(family) if family else None


def _full(record: Record) -> str | None:
    parts = [p for p in (_given(record), _family(record)) if p]
    return " ".join(parts) or None


def _address(key: str) -> Extractor:
    return lambda record, facts, at: (record.get("address") or {}).get(key)


def _fact_date(fact: Mapping[str, Any]) -> date | None:
    raw = fact.get("date") or fact.get("start")
    if not raw:
        return None
    try:
        return date.fromisoformat(str(raw)[:10])
    except ValueError:
        return None


def _next_appointment(record: Record, facts: Facts, at: datetime) -> str | None:
    today = at.date()
    upcoming = [
        d
        for f in facts
        if f.get("kind") == "appointment"
        and f.get("status") not in ("cancelled", "noshow", "entered-in-error")
        and (d := _fact_date(f)) is not None
        and d >= today
    ]
    return min(upcoming).isoformat() if upcoming else None


def _last_visit(record: Record, facts: Facts, at: datetime) -> str | None:
    today = at.date()
    past = [
        d
        for f in facts
        if f.get("kind") == "encounter" and (d := _fact_date(f)) is not None and d <= today
    ]
    return max(past).isoformat() if past else None


PHI_FIELDS: dict[str, Extractor] = {
    "first_name": lambda r, f, at: _given(r),
    "last_name": lambda r, f, at: _family(r),
    "full_name": lambda r, f, at: _full(r),
    "birth_date": lambda r, f, at: r.get("birth_date"),
    "city": _address("city"),
    "state": _address("state"),
    "postal_code": _address("postal_code"),
    "language": lambda r, f, at: r.get("language"),
    "insurance_type": lambda r, f, at: r.get("insurance_type"),
    "mrn": lambda r, f, at: r.get("mrn"),
    "next_appointment_date": _next_appointment,
    "last_visit_date": _last_visit,
}


def is_known_phi_field(name: str) -> bool:
    return name in PHI_FIELDS or bool(_DYNAMIC.match(name))


def nearest(name: str) -> str | None:
    known = [*PHI_FIELDS, *NON_PHI_FIELDS]
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return match[0] if match else None


def phi_context(
    declared: Sequence[str],
    record: Record,
    facts: Facts,
    at: datetime,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Only the declared fields, computed for one contact. Missing values are None."""
    context: dict[str, Any] = {}
    attributes = record.get("attributes") or {}
    for name in declared:
        if name.startswith("attr_"):
            context[name] = attributes.get(name.removeprefix("attr_"))
        elif name.startswith("data_"):
            context[name] = (data or {}).get(name.removeprefix("data_"))
        else:
            context[name] = PHI_FIELDS[name](record, facts, at)
    return context
