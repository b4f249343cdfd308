"""GET /audit: the audit log, filtered and paginated in chain order (auditor, compliance).
Entries hold ids, actions, purposes and non-PHI details only (audit/service.py)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from pydantic import BaseModel

from carepost.api.context import Caller, guard
from carepost.api.pagination import CursorParam, Limit, Page, decode_cursor, page
from carepost.api.params import Rfc3339
from carepost.api.responses import problems
from carepost.api.text_guard import NulFreeRoute
from carepost.audit import service
from carepost.clock import isoformat_utc

router = APIRouter(tags=["audit"], route_class=NulFreeRoute)


class AuditEntryOut(BaseModel):
    seq: int
    at: str
    actor: str
    action: str
    subjects: list[str]
    purpose: str
    source_kind: str
    source_address: str
    details: dict[str, Any]


@router.get(
    "/audit",
    response_model=Page[AuditEntryOut],
    summary="Query the audit log",
    responses=problems(400),
    **guard("audit:read"),
)
def query_audit(
    ctx: Caller,
    action: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=r"^[a-z0-9_.:-]+$",
            description="An action, or a prefix ending in '.' (e.g. staff.)",
        ),
    ] = None,
    subject: Annotated[
        str | None, Query(pattern=r"^[0-9a-f]{32}$", description="an id the entries name")
    ] = None,
    since: Annotated[Rfc3339 | None, Query(description="at or after (UTC offset)")] = None,
    until: Annotated[Rfc3339 | None, Query(description="before (UTC offset)")] = None,
    limit: Limit = 100,
    cursor: CursorParam = None,
) -> Page[AuditEntryOut]:
    after = decode_cursor(cursor, 1)
    with ctx.transaction() as s:
        rows = service.query(
            s,
            action=action,
            subject=subject,
            since=isoformat_utc(since) if since else None,
            until=isoformat_utc(until) if until else None,
            after_seq=int(after[0]) if after and isinstance(after[0], int) else None,
            limit=limit + 1,
            principal=ctx.principal,
        )
        items = [
            AuditEntryOut(
                seq=r.seq,
                at=r.at,
                actor=r.actor,
                action=r.action,
                subjects=orjson.loads(r.subjects),
                purpose=r.purpose,
                source_kind=r.source_kind,
                source_address=r.source_address,
                details=orjson.loads(r.details),
            )
            for r in rows
        ]
    return page(items, limit, lambda e: [e.seq])
