"""Consents (append-only history per channel and topic) and HIPAA authorizations: their
plain structure only. An authorization's document is sealed on write and never answered."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from carepost.api.context import Caller, guard
from carepost.api.idempotency import Once
from carepost.api.params import IdPath, Rfc3339
from carepost.api.responses import problems
from carepost.api.text_guard import NulFreeRoute
from carepost.consent import service
from carepost.consent.records import CHANNELS, CONSENT_SOURCES, CONSENT_STATUSES
from carepost.contacts.service import require_live

router = APIRouter(tags=["consent"], route_class=NulFreeRoute)

Channel = Literal[CHANNELS]  # type: ignore[valid-type]
Source = Literal[CONSENT_SOURCES]  # type: ignore[valid-type]
Topic = Field(pattern=r"^[a-z0-9._-]{1,64}$", description="a topic slug, e.g. newsletter")


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    topic: str = Topic
    status: Literal[CONSENT_STATUSES]  # type: ignore[valid-type]
    source: Source = "api"
    evidence_ref: str = Field(default="", max_length=256)
    effective_at: Rfc3339 | None = None


class Created(BaseModel):
    id: str


@router.post(
    "/contacts/{contact_id}/consents",
    status_code=201,
    response_model=Created,
    summary="Record a consent statement (history is kept)",
    responses=problems(400, 404, 409, 410),
    **guard("consent:write"),
)
def set_consent(contact_id: IdPath, body: ConsentIn, ctx: Caller, once: Once) -> Response:
    def act(session: Session) -> Created:
        require_live(session, contact_id)
        return Created(
            id=service.set_consent(
                session,
                contact_id=contact_id,
                channel=body.channel,
                topic=body.topic,
                status=body.status,
                source=body.source,
                evidence_ref=body.evidence_ref,
                effective_at=body.effective_at,
                actor=ctx.principal.actor,
                clock=lambda: ctx.at,
                principal=ctx.principal,
            )
        )

    return once.run(ctx, act, status=201)


class ConsentOut(BaseModel):
    id: str
    channel: str
    topic: str
    status: str
    source: str
    evidence_ref: str
    effective_at: datetime
    recorded_at: datetime


class ConsentList(BaseModel):
    items: list[ConsentOut]


@router.get(
    "/contacts/{contact_id}/consents",
    response_model=ConsentList,
    summary="A contact's consent history",
    responses=problems(410),
    **guard("consent:read"),
)
def consent_history(contact_id: IdPath, ctx: Caller) -> ConsentList:
    with ctx.transaction() as s:
        rows = service.consent_history(s, contact_id, principal=ctx.principal)
        require_live(s, contact_id)
    return ConsentList(items=[ConsentOut.model_validate(r.as_dict()) for r in rows])


@router.post(
    "/contacts/{contact_id}/authorizations",
    status_code=201,
    response_model=Created,
    summary="Record a HIPAA authorization (45 CFR 164.508; every core element checked)",
    description="The body is the authorization document (see docs/architecture.md, "
    "consent); a 422 names every missing or invalid element, never its value. The "
    "document is sealed under the contact's key.",
    responses=problems(400, 404, 409, 410),
    **guard("authorizations:write"),
)
def add_authorization(
    contact_id: IdPath, body: dict[str, Any], ctx: Caller, once: Once
) -> Response:
    def act(session: Session) -> Created:
        require_live(session, contact_id)
        return Created(
            id=service.add_authorization(
                session,
                ctx.workspace.keyring,
                contact_id=contact_id,
                document=body,
                actor=ctx.principal.actor,
                clock=lambda: ctx.at,
                principal=ctx.principal,
            )
        )

    return once.run(ctx, act, status=201)


class AuthorizationOut(BaseModel):
    id: str
    purposes: list[str]
    recipients: list[str]
    signed_at: datetime | None
    signature_method: str
    signed_text_sha256: str
    signed_by_representative: bool
    remuneration_statement: bool | None
    expires_at: datetime | None
    expires_by_event: bool
    expiry_event_at: datetime | None
    revoked_at: datetime | None
    revocation_source: str | None


class AuthorizationList(BaseModel):
    items: list[AuthorizationOut]


@router.get(
    "/contacts/{contact_id}/authorizations",
    response_model=AuthorizationList,
    summary="A contact's authorizations (structure only)",
    responses=problems(410),
    **guard("authorizations:read"),
)
def list_authorizations(contact_id: IdPath, ctx: Caller) -> AuthorizationList:
    with ctx.transaction() as s:
        rows = service.authorizations_of(s, contact_id, principal=ctx.principal)
        require_live(s, contact_id)
    return AuthorizationList(items=[AuthorizationOut.model_validate(r) for r in rows])


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Source = "api"
    evidence_ref: str = Field(default="", max_length=256)
    revoked_at: Rfc3339 | None = None


class Revoked(BaseModel):
    id: str
    revoked_at: datetime


@router.post(
    "/authorizations/{authorization_id}/revoke",
    response_model=Revoked,
    summary="Revoke an authorization (the earliest revocation stands)",
    responses=problems(400, 404, 409),
    **guard("authorizations:write"),
)
def revoke_authorization(
    authorization_id: IdPath, body: RevokeIn, ctx: Caller, once: Once
) -> Response:
    def act(session: Session) -> Revoked:
        when = service.revoke_authorization(
            session,
            authorization_id=authorization_id,
            source=body.source,
            evidence_ref=body.evidence_ref,
            revoked_at=body.revoked_at,
            actor=ctx.principal.actor,
            clock=lambda: ctx.at,
            principal=ctx.principal,
        )
        return Revoked(id=authorization_id, revoked_at=when)

    return once.run(ctx, act)
