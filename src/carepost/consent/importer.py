"""CSV import of consents and HIPAA authorizations.

Every row is validated before anything is written; without `skip_invalid`, one problem
means nothing is written (`ImportRejected`). Problems name the line and the column and
never repeat a value. Each row becomes the same audited change its service makes.

Contacts are named by `contact_id`, or by `external_id` (with an optional
`source_system`, default `csv`, as in the contact CSV import).

Consents: contact_id|external_id, channel, topic, status, source (default import),
evidence_ref, effective_at (ISO 8601 with offset; default: the import's time).

Authorizations: contact_id|external_id, phi_description, disclosers (`;`-separated),
recipients (`id=name;id=name`), purposes (`code=description;…`), expires_at,
expiry_event, signer_name, signed_at, signed_by, representative_name,
representative_authority, signature_method, signature_source_address, signed_text,
signed_text_sha256, right_to_revoke, revocation_instructions, conditioning,
redisclosure, remuneration, remuneration_from (flags: yes/no, true/false, 1/0).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.consent import service
from carepost.consent.authorization import (
    AuthorizationDocument,
    AuthorizationInvalid,
    validate_authorization,
)
from carepost.consent.records import CHANNELS, CONSENT_SOURCES, CONSENT_STATUSES, valid_topic
from carepost.contacts.importers.errors import ImportProblem, ImportRejected
from carepost.contacts.models import Contact, ContactLookup
from carepost.crypto.blind_index import blind_index, normalize_identifier
from carepost.crypto.keyring import KeyRing

CONSENT_COLUMNS = (
    "contact_id",
    "external_id",
    "source_system",
    "channel",
    "topic",
    "status",
    "source",
    "evidence_ref",
    "effective_at",
)
AUTH_COLUMNS = (
    "contact_id",
    "external_id",
    "source_system",
    "phi_description",
    "disclosers",
    "recipients",
    "purposes",
    "expires_at",
    "expiry_event",
    "signer_name",
    "signed_at",
    "signed_by",
    "representative_name",
    "representative_authority",
    "signature_method",
    "signature_source_address",
    "signed_text",
    "signed_text_sha256",
    "right_to_revoke",
    "revocation_instructions",
    "conditioning",
    "redisclosure",
    "remuneration",
    "remuneration_from",
)
# Authorization element path -> the CSV column it comes from.
_ELEMENT_COLUMN = {
    "signature.signer_name": "signer_name",
    "signature.signed_at": "signed_at",
    "signature.signed_by": "signed_by",
    "signature.method": "signature_method",
    "signature.source_address": "signature_source_address",
    "signature.signed_text": "signed_text",
    "signature.signed_text_sha256": "signed_text_sha256",
    "representative.name": "representative_name",
    "representative.authority": "representative_authority",
    "expires_at or expiry_event": "expires_at",
}
_TRUE = {"yes", "true", "1", "y"}
_FALSE = {"no", "false", "0", "n", ""}


@dataclass
class ConsentImportSummary:
    kind: str
    rows: int = 0
    written: int = 0
    problems: list[ImportProblem] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rows": self.rows,
            "written": self.written,
            "invalid": [p.as_dict() for p in self.problems],
        }


def _where(line: int, header: list[str], column: str) -> str:
    idx = header.index(column) + 1 if column in header else 0
    return f"line {line}, column {idx} '{column}'" if idx else f"line {line}, column '{column}'"


def _time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


class _Resolver:
    def __init__(self, session: Session, ring: KeyRing) -> None:
        self.session = session
        self.ring = ring

    def contact(self, row: dict[str, str]) -> tuple[str | None, str, str]:
        """(contact id or None, column to blame, problem)."""
        cid = (row.get("contact_id") or "").strip()
        if cid:
            if self.session.get(Contact, cid) is None:
                return None, "contact_id", "no such contact"
            return cid, "", ""
        ext = (row.get("external_id") or "").strip()
        if not ext:
            return None, "contact_id", "contact_id or external_id is required"
        system = (row.get("source_system") or "").strip() or "csv"
        bi = blind_index(self.ring, "source", f"csv:{system}:{normalize_identifier(ext)}")
        found = (
            self.session.query(ContactLookup.contact_id)
            .filter(ContactLookup.kind == "source", ContactLookup.value_bi == bi)
            .all()
        )
        if len(found) != 1:
            return None, "external_id", "no such contact" if not found else "ambiguous"
        return str(found[0][0]), "", ""


def _read(
    path: Path, allowed: tuple[str, ...]
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if not header:
            raise ImportRejected([ImportProblem("line 1", "the file is empty")])
        unknown = [h for h in header if h not in allowed]
        if unknown:
            raise ImportRejected(
                [
                    ImportProblem(f"line 1, column {header.index(h) + 1} '{h}'", "unknown column")
                    for h in unknown
                ]
            )
        rows = []
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                rows.append((line, {"__width__": str(len(record))}))
                continue
            rows.append((line, dict(zip(header, record, strict=True))))
    return header, rows


@dataclass
class _RowCheck:
    """The problems found in one row, each named by line and column."""

    line: int
    header: list[str]
    problems: list[ImportProblem] = field(default_factory=list)

    def bad(self, column: str, message: str) -> None:
        self.problems.append(ImportProblem(_where(self.line, self.header, column), message))


def _checked_rows(
    header: list[str],
    rows: list[tuple[int, dict[str, str]]],
    summary: ConsentImportSummary,
    resolver: _Resolver,
) -> Iterator[tuple[dict[str, str], _RowCheck, str | None]]:
    """What both importers do first with a row: a row of the wrong width is a problem of
    its own and goes no further; otherwise its contact is resolved (or the failure noted)."""
    for line, row in rows:
        if "__width__" in row:
            summary.problems.append(
                ImportProblem(
                    f"line {line}", f"has {row['__width__']} cells, header has {len(header)}"
                )
            )
            continue
        check = _RowCheck(line, header)
        cid, col, why = resolver.contact(row)
        if cid is None:
            check.bad(col, why)
        yield row, check, cid


def import_consents(
    session: Session,
    ring: KeyRing,
    path: Path,
    *,
    actor: Actor,
    skip_invalid: bool = False,
    clock: Clock = system_clock,
) -> ConsentImportSummary:
    header, rows = _read(path, CONSENT_COLUMNS)
    summary = ConsentImportSummary("consents", rows=len(rows))
    resolver = _Resolver(session, ring)
    valid: list[dict[str, Any]] = []
    for row, check, cid in _checked_rows(header, rows, summary, resolver):
        bad, problems = check.bad, check.problems
        channel = row.get("channel", "").strip()
        if channel not in CHANNELS:
            bad("channel", f"must be one of {', '.join(CHANNELS)}")
        topic = row.get("topic", "").strip()
        if not valid_topic(topic):
            bad("topic", "must be 1-64 characters of a-z, 0-9, '-', '_', '.'")
        status = row.get("status", "").strip().replace("-", "_")
        if status not in CONSENT_STATUSES:
            bad("status", f"must be one of {', '.join(CONSENT_STATUSES)}")
        source = row.get("source", "").strip() or "import"
        if source not in CONSENT_SOURCES:
            bad("source", f"must be one of {', '.join(CONSENT_SOURCES)}")
        evidence = row.get("evidence_ref", "").strip()
        if len(evidence) > 256:
            bad("evidence_ref", "longer than 256 characters")
        effective = None
        if row.get("effective_at", "").strip():
            effective = _time(row["effective_at"])
            if effective is None:
                bad("effective_at", "not an ISO 8601 date-time with a UTC offset")
        if problems:
            summary.problems.extend(problems)
            continue
        valid.append(
            {
                "contact_id": cid,
                "channel": channel,
                "topic": topic,
                "status": status,
                "source": source,
                "evidence_ref": evidence,
                "effective_at": effective,
            }
        )
    if summary.problems and not skip_invalid:
        raise ImportRejected(summary.problems)
    for item in valid:
        summary.ids.append(service.set_consent(session, **item, actor=actor, clock=clock))
    summary.written = len(valid)
    return summary


def _flag(value: str) -> bool | None:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return None


def _pairs(value: str, first: str, second: str) -> list[dict[str, str]] | None:
    out = []
    for part in value.split(";"):
        if not part.strip():
            continue
        if "=" not in part:
            return None
        a, b = part.split("=", 1)
        out.append({first: a.strip(), second: b.strip()})
    return out


def _document(row: dict[str, str], bad: Callable[[str, str], None]) -> dict[str, Any]:
    def g(key: str) -> str:
        return row.get(key, "").strip()

    recipients = _pairs(g("recipients"), "id", "name")
    if recipients is None:
        bad("recipients", "use id=name;id=name")
    purposes = _pairs(g("purposes"), "code", "description")
    if purposes is None:
        bad("purposes", "use code=description;code=description")
    flags: dict[str, bool | None] = {}
    for name in ("right_to_revoke", "conditioning", "redisclosure", "remuneration"):
        flags[name] = _flag(g(name))
        if flags[name] is None:
            bad(name, "use yes or no")
    doc: dict[str, Any] = {
        "phi_description": g("phi_description"),
        "disclosers": [d.strip() for d in g("disclosers").split(";") if d.strip()],
        "recipients": recipients or [],
        "purposes": purposes or [],
        "expires_at": g("expires_at") or None,
        "expiry_event": g("expiry_event") or None,
        "signature": {
            "signer_name": g("signer_name"),
            "signed_at": g("signed_at"),
            "signed_by": g("signed_by") or "individual",
            "method": g("signature_method"),
            "source_address": g("signature_source_address"),
            "signed_text": row.get("signed_text", ""),
            "signed_text_sha256": g("signed_text_sha256") or None,
        },
        "statements": {
            "right_to_revoke": flags["right_to_revoke"] is True,
            "revocation_instructions": g("revocation_instructions"),
            "conditioning": flags["conditioning"] is True,
            "redisclosure": flags["redisclosure"] is True,
            "remuneration": flags["remuneration"] is True,
            "remuneration_from": g("remuneration_from") or None,
        },
    }
    if g("representative_name") or g("representative_authority"):
        doc["representative"] = {
            "name": g("representative_name"),
            "authority": g("representative_authority"),
        }
    return doc


def _column_of(element: str) -> str:
    if element in _ELEMENT_COLUMN:
        return _ELEMENT_COLUMN[element]
    head = element.split("[", 1)[0].split(".", 1)
    if head[0] == "statements":
        return head[1] if len(head) > 1 else "statements"
    return head[0]


def import_authorizations(
    session: Session,
    ring: KeyRing,
    path: Path,
    *,
    actor: Actor,
    skip_invalid: bool = False,
    clock: Clock = system_clock,
) -> ConsentImportSummary:
    header, rows = _read(path, AUTH_COLUMNS)
    summary = ConsentImportSummary("authorizations", rows=len(rows))
    resolver = _Resolver(session, ring)
    valid: list[tuple[str, AuthorizationDocument]] = []
    for row, check, cid in _checked_rows(header, rows, summary, resolver):
        bad, problems = check.bad, check.problems
        doc = _document(row, bad)
        parsed: AuthorizationDocument | None = None
        try:
            parsed = validate_authorization(doc)
        except AuthorizationInvalid as exc:
            for element in exc.missing:
                bad(_column_of(element), f"missing required element {element}")
            for element, problem in exc.invalid:
                bad(_column_of(element), f"invalid element {element}: {problem}")
        if problems:
            summary.problems.extend(problems)
            continue
        assert cid is not None
        assert parsed is not None
        valid.append((cid, parsed))
    if summary.problems and not skip_invalid:
        raise ImportRejected(summary.problems)
    for cid, parsed in valid:
        summary.ids.append(
            service.add_authorization(
                session, ring, contact_id=cid, document=parsed, actor=actor, clock=clock
            )
        )
    summary.written = len(valid)
    return summary
