"""Suppressions: addresses (kept as blind indexes) that no message may go to. An address
comes in the body (never the URL) or as a contact's addresses on the channel; answers
show a prefix of the blind index, never the address."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from carepost.api.context import Caller, guard
from carepost.api.idempotency import Once
from carepost.api.pagination import CursorParam, Limit, Page, decode_cursor, page
from carepost.api.params import ID_PATTERN, IdField, IdPath
from carepost.api.responses import problems
from carepost.api.text_guard import NulFreeRoute
from carepost.consent import service
from carepost.consent.records import CHANNELS, CONSENT_SOURCES, SUPPRESSION_REASONS
from carepost.contacts.service import require_live

router = APIRouter(tags=["suppressions"], route_class=NulFreeRoute)


def _one_target_schema(schema: dict[str, Any]) -> None:
    # What `one_target` enforces, said in the document: a string, not null, in one of
    # the two fields.
    props = schema["properties"]
    props["contact_id"] = {"type": "string", "pattern": ID_PATTERN}
    props["address"] = {"type": "string", "minLength": 3, "maxLength": 254}
    schema["oneOf"] = [{"required": ["contact_id"]}, {"required": ["address"]}]


class SuppressionIn(BaseModel):
    """Exactly one of `contact_id` (all its addresses on the channel) or `address`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_target_schema)

    @model_validator(mode="before")
    @classmethod
    def no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in ("contact_id", "address"):
                if name in data and data[name] is None:
                    raise ValueError(f"{name}: leave it out rather than null")
        return data

    channel: Literal[CHANNELS]  # type: ignore[valid-type]
    reason: Literal[SUPPRESSION_REASONS] = "manual"  # type: ignore[valid-type]
    source: Literal[CONSENT_SOURCES] = "api"  # type: ignore[valid-type]
    evidence_ref: str = Field(default="", max_length=256)
    contact_id: IdField | None = None
    address: str | None = Field(default=None, min_length=3, max_length=254)

    @model_validator(mode="after")
    def one_target(self) -> SuppressionIn:
        if (self.contact_id is None) == (self.address is None):
            raise ValueError("give exactly one of contact_id or address")
        return self


class SuppressionsAdded(BaseModel):
    ids: list[str] = Field(
        description="New suppressions (an address already suppressed for the same reason adds none)"
    )


@router.post(
    "/suppressions",
    status_code=201,
    response_model=SuppressionsAdded,
    summary="Suppress an address or a contact's addresses",
    responses=problems(400, 404, 409, 410),
    **guard("consent:write"),
)
def add_suppression(body: SuppressionIn, ctx: Caller, once: Once) -> Response:
    def act(session: Session) -> SuppressionsAdded:
        if body.contact_id is not None:
            require_live(session, body.contact_id)
            bis = service.contact_address_bis(session, body.contact_id, body.channel)
        else:
            assert body.address is not None
            bis = [service.address_bi(ctx.workspace.keyring, body.channel, body.address)]
        ids = service.add_suppression(
            session,
            channel=body.channel,
            address_bis=bis,
            reason=body.reason,
            source=body.source,
            evidence_ref=body.evidence_ref,
            contact_id=body.contact_id,
            actor=ctx.principal.actor,
            clock=lambda: ctx.at,
            principal=ctx.principal,
        )
        return SuppressionsAdded(ids=ids)

    return once.run(ctx, act, status=201)


@router.delete(
    "/suppressions/{suppression_id}",
    status_code=204,
    summary="Lift a suppression (audited)",
    responses=problems(404),
    **guard("consent:write"),
)
def remove_suppression(suppression_id: IdPath, ctx: Caller) -> Response:
    with ctx.transaction() as s:
        service.remove_suppression(
            s,
            suppression_id=suppression_id,
            actor=ctx.principal.actor,
            clock=lambda: ctx.at,
            principal=ctx.principal,
        )
    return Response(status_code=204)


class SuppressionOut(BaseModel):
    id: str
    channel: str
    address_bi: str = Field(description="the blind index's first characters, to tell rows apart")
    reason: str
    source: str
    evidence_ref: str
    created_at: datetime
    actor: str
    removed_at: datetime | None


@router.get(
    "/suppressions",
    response_model=Page[SuppressionOut],
    summary="List suppressions",
    responses=problems(400),
    **guard("consent:read"),
)
def list_suppressions(
    ctx: Caller,
    limit: Limit = 100,
    cursor: CursorParam = None,
    include_removed: bool = Query(default=False),
) -> Page[SuppressionOut]:
    after = decode_cursor(cursor, 1)
    with ctx.transaction() as s:
        rows = service.list_suppressions(
            s,
            include_removed=include_removed,
            limit=limit + 1,
            after=str(after[0]) if after else None,
            principal=ctx.principal,
        )
    return page([SuppressionOut.model_validate(r) for r in rows], limit, lambda r: [r.id])
