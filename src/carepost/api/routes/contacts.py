"""Contacts and their clinical facts. Lists answer ids, times and counts only; a record
or its facts are PHI: they need `X-Purpose` and go through contacts/phi.py, the audited
door, which decides on `phi:read`, `phi:read_recipients` (a care team's own recipients)
or a live break-glass grant."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from carepost.api.context import Caller, guard
from carepost.api.idempotency import Once
from carepost.api.pagination import CursorParam, Limit, Page, decode_cursor, page
from carepost.api.params import IdPath
from carepost.api.purpose import Purpose
from carepost.api.responses import problems
from carepost.api.text_guard import NulFreeRoute
from carepost.contacts import phi, service, upsert
from carepost.contacts.record import FACT_KINDS

router = APIRouter(tags=["contacts"], route_class=NulFreeRoute)

PHI_NOTE = (
    "phi:read, or phi:read_recipients for contacts one's own messages went to, or a live "
    "break-glass grant (users only); decided by contacts/phi.py, audited with X-Purpose"
)
Text = Field(default=None, max_length=256)


class ContactRowIn(BaseModel):
    """A contact's full current state from the client's system (empty: no value). Matched
    by external_id (within source_system), else by email."""

    model_config = ConfigDict(extra="forbid")

    external_id: str | None = Text
    mrn: str | None = Text
    first_name: str | None = Text
    middle_name: str | None = Text
    last_name: str | None = Text
    email: str | None = Text
    phone: str | None = Text
    birth_date: str | None = Field(default=None, max_length=10, description="YYYY-MM-DD")
    sex: str | None = Text
    gender_identity: str | None = Text
    address_line1: str | None = Text
    address_line2: str | None = Text
    city: str | None = Text
    state: str | None = Text
    postal_code: str | None = Text
    country: str | None = Text
    language: str | None = Text
    insurance_type: str | None = Text
    attributes: dict[str, str] = Field(default_factory=dict, max_length=64)


class BulkIn(BaseModel):
    source_system: str = Field(default="api", pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$")
    rows: list[ContactRowIn] = Field(min_length=1, max_length=upsert.MAX_ROWS)


class RowOutcome(BaseModel):
    row: int
    status: Literal["created", "updated", "unchanged", "skipped"]
    contact_id: str | None
    reason: str


class BulkOut(BaseModel):
    run_id: str
    rows: list[RowOutcome]


@router.post(
    "/contacts:bulk",
    response_model=BulkOut,
    summary="Upsert contacts (all rows or none)",
    description="Every row is checked first; if any is invalid the answer is a 422 "
    "problem whose `errors` name each row and field (`/rows/3/email`), and nothing is "
    "written. Honours Idempotency-Key.",
    responses=problems(400, 409),
    **guard("contacts:write"),
)
def bulk_upsert(body: BulkIn, ctx: Caller, once: Once) -> Response:
    rows = [
        upsert.ContactRow(r.model_dump(exclude={"attributes"}), r.attributes) for r in body.rows
    ]

    def act(session: Session) -> BulkOut:
        run_id, outcomes = upsert.upsert_contacts(
            session,
            ctx.workspace.keyring,
            rows,
            actor=ctx.principal.actor,
            now=ctx.at,
            source_system=body.source_system,
            principal=ctx.principal,
        )
        return BulkOut(
            run_id=run_id,
            rows=[
                RowOutcome.model_validate(
                    {"row": i, "status": o.status, "contact_id": o.contact_id, "reason": o.reason}
                )
                for i, o in enumerate(outcomes)
            ],
        )

    return once.run(ctx, act)


class ContactSummaryOut(BaseModel):
    id: str
    source: str
    created_at: datetime
    updated_at: datetime
    facts: dict[str, int]


@router.get(
    "/contacts",
    response_model=Page[ContactSummaryOut],
    summary="List contacts (ids, times and fact counts; no PHI)",
    responses=problems(400),
    **guard("contacts:read"),
)
def list_contacts(
    ctx: Caller, limit: Limit = 100, cursor: CursorParam = None
) -> Page[ContactSummaryOut]:
    after = decode_cursor(cursor, 1)
    with ctx.transaction() as s:
        rows = service.list_contacts(
            s,
            limit=limit + 1,
            after=str(after[0]) if after else None,
            principal=ctx.principal,
        )
    items = [
        ContactSummaryOut(
            id=r.id,
            source=r.source,
            created_at=r.created_at,
            updated_at=r.updated_at,
            facts=r.facts,
        )
        for r in rows
    ]
    return page(items, limit, lambda c: [c.id])


class ContactOut(BaseModel):
    id: str
    source: str
    created_at: datetime
    updated_at: datetime
    record: dict[str, Any] = Field(description="The decrypted record (contacts/record.py)")
    facts: list[dict[str, Any]]


def _read(ctx: Caller, contact_id: str, purpose: str) -> phi.ContactView:
    with ctx.transaction() as s:
        return phi.read_contact(
            s,
            ctx.workspace.keyring,
            contact_id,
            actor=ctx.principal.actor,
            purpose=purpose,
            principal=ctx.principal,
            clock=lambda: ctx.at,
        )


@router.get(
    "/contacts/{contact_id}",
    response_model=ContactOut,
    summary="A contact's record and facts (PHI: X-Purpose required; audited)",
    responses=problems(400, 404, 410),
    **guard("phi:read", decided_by_service=PHI_NOTE),
)
def get_contact(contact_id: IdPath, ctx: Caller, purpose: Purpose) -> ContactOut:
    view = _read(ctx, contact_id, purpose)
    return ContactOut(**view.as_dict())


class FactsOut(BaseModel):
    items: list[dict[str, Any]]


@router.get(
    "/contacts/{contact_id}/facts",
    response_model=FactsOut,
    summary="A contact's clinical facts (PHI: X-Purpose required; audited)",
    responses=problems(400, 404, 410),
    **guard("phi:read", decided_by_service=PHI_NOTE),
)
def get_facts(contact_id: IdPath, ctx: Caller, purpose: Purpose) -> FactsOut:
    return FactsOut(items=_read(ctx, contact_id, purpose).facts)


@router.delete(
    "/contacts/{contact_id}",
    status_code=204,
    summary="Erase a contact (crypto-shred its PHI; audited)",
    responses=problems(404),
    **guard("contacts:write"),
)
def delete_contact(contact_id: IdPath, ctx: Caller) -> Response:
    with ctx.transaction() as s:
        service.delete_contact(
            s,
            contact_id,
            actor=ctx.principal.actor,
            reason="erased through the API",
            principal=ctx.principal,
            clock=lambda: ctx.at,
        )
    return Response(status_code=204)


class CodeIn(BaseModel):
    system: str | None = Field(default=None, max_length=256)
    code: str = Field(min_length=1, max_length=64)
    display: str | None = Field(default=None, max_length=256)


class FactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_id: str = Field(
        min_length=1,
        max_length=128,
        description="The fact's id in your system: sent again, it updates",
    )
    kind: Literal[FACT_KINDS]  # type: ignore[valid-type]
    code: CodeIn | None = None
    status: str | None = Field(default=None, max_length=32)
    date: str | None = Field(default=None, max_length=32)
    value: float | str | None = Field(default=None)
    unit: str | None = Field(default=None, max_length=32)


class FactsIn(BaseModel):
    facts: list[FactIn] = Field(min_length=1, max_length=1000)


class FactCounts(BaseModel):
    created: int
    updated: int
    unchanged: int


@router.post(
    "/contacts/{contact_id}/facts",
    response_model=FactCounts,
    summary="Add or update clinical facts of a contact",
    responses=problems(400, 404, 409, 410),
    **guard("contacts:write"),
)
def add_facts(contact_id: IdPath, body: FactsIn, ctx: Caller, once: Once) -> Response:
    rows = []
    for f in body.facts:
        payload = f.model_dump(exclude={"source_id", "kind"}, exclude_none=True)
        if "code" in payload:
            payload["codes"] = [payload["code"]]
        rows.append(upsert.FactRow(f.source_id, f.kind, payload))

    def act(session: Session) -> FactCounts:
        counts = upsert.upsert_facts(
            session,
            ctx.workspace.keyring,
            contact_id,
            rows,
            actor=ctx.principal.actor,
            now=ctx.at,
            clock=lambda: ctx.at,
            principal=ctx.principal,
        )
        return FactCounts(**counts)

    return once.run(ctx, act)
