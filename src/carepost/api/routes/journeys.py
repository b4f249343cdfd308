"""Journeys: list, read one (versions, status, enrolments), publish a definition (YAML
or JSON text, or a JSON object), pause, resume, enrol contacts by id, and the report
(counts per step, no PHI: `reports:read`). A definition's problems answer as a 422
problem, each error naming the step and field (`steps[2] (remind).send.class`)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from carepost.api.context import ApiContext, Caller, guard
from carepost.api.idempotency import IdempotentRequest, Once
from carepost.api.pagination import CursorParam, Limit, Page, after_id, page_of
from carepost.api.text_guard import NulFreeRoute
from carepost.journeys import report, service

router = APIRouter(tags=["journeys"], route_class=NulFreeRoute)


class JourneySummary(BaseModel):
    name: str
    version: int  # the newest
    status: str
    trigger: str
    sender: str
    enrolments: dict[str, int]  # active, waiting, exited (all versions)


def _summary(s: service.JourneySummary) -> JourneySummary:
    return JourneySummary(
        name=s.name,
        version=s.version,
        status=s.status,
        trigger=s.trigger,
        sender=s.sender,
        enrolments={"active": s.active, "waiting": s.waiting, "exited": s.exited},
    )


class VersionOut(BaseModel):
    id: str
    version: int
    status: str
    sender: str
    topic: str
    created_at: datetime
    actor: str


class JourneyDetail(JourneySummary):
    definition: dict[str, Any]  # the newest version's checked document
    versions: list[VersionOut]


class PublishIn(BaseModel):
    definition: str | dict[str, Any] = Field(
        description="The journey definition: YAML or JSON text, or a JSON object."
    )
    sender: str = Field(min_length=1, max_length=64, description="Sender profile id.")
    topic: str | None = Field(
        None, max_length=64, description="Consent topic of its messages [its name]."
    )


class Published(BaseModel):
    name: str
    version: int
    warnings: list[str]


class StatusOut(BaseModel):
    name: str
    status: str
    versions: int


ContactId = Annotated[str, Field(min_length=1, max_length=32)]


class EnrolIn(BaseModel):
    contact_ids: list[ContactId] = Field(min_length=1, max_length=1000)


class Enrolled(BaseModel):
    enrolled: int
    refused: dict[str, int]  # reason -> contacts


@router.get(
    "/journeys",
    response_model=Page[JourneySummary],
    summary="Published journeys (newest version of each)",
    **guard("journeys:read"),
)
def list_journeys(
    ctx: Caller, limit: Limit = 50, cursor: CursorParam = None
) -> Page[JourneySummary]:
    after = after_id(cursor)
    with ctx.transaction() as session:
        rows = service.journey_page(session, after=after, limit=limit + 1, principal=ctx.principal)
    return page_of(rows, limit, lambda r: [r[0]], lambda r: _summary(r[1]))


@router.get(
    "/journeys/{name}",
    response_model=JourneyDetail,
    summary="A journey: its versions, status and enrolments",
    **guard("journeys:read"),
)
def get_journey(name: str, ctx: Caller) -> JourneyDetail:
    with ctx.transaction() as session:
        versions = service.journey_versions(session, name, principal=ctx.principal)
        (summary,) = service.list_journeys(session, [name], principal=ctx.principal)
        return JourneyDetail(
            **_summary(summary).model_dump(),
            definition=json.loads(versions[0].definition),
            versions=[
                VersionOut(
                    id=v.id,
                    version=v.version,
                    status=v.status,
                    sender=v.sender_id,
                    topic=v.topic,
                    created_at=v.created_at,
                    actor=v.actor,
                )
                for v in versions
            ],
        )


@router.post(
    "/journeys",
    response_model=Published,
    status_code=201,
    summary="Publish a new version of a journey (running enrolments keep theirs)",
    **guard("journeys:write"),
)
def publish_journey(body: PublishIn, ctx: Caller, once: Once) -> Response:
    text = body.definition if isinstance(body.definition, str) else json.dumps(body.definition)

    def act(session: Session) -> Published:
        done = service.do_publish_journey(
            session,
            text,
            sender_id=body.sender,
            topic=body.topic,
            actor=ctx.principal.actor,
            principal=ctx.principal,
            clock=ctx.clock,
        )
        return Published(name=done.row.name, version=done.row.version, warnings=list(done.warnings))

    return once.run(ctx, act, status=201)


def _set(ctx: ApiContext, once: IdempotentRequest, name: str, status: str) -> Response:
    def act(session: Session) -> StatusOut:
        n = service.do_set_status(
            session,
            name,
            status,
            actor=ctx.principal.actor,
            principal=ctx.principal,
            clock=ctx.clock,
        )
        return StatusOut(name=name, status=status, versions=n)

    return once.run(ctx, act)


@router.post(
    "/journeys/{name}/pause",
    response_model=StatusOut,
    summary="Pause: no enrolments, no steps, its queued messages held",
    **guard("journeys:write"),
)
def pause_journey(name: str, ctx: Caller, once: Once) -> Response:
    return _set(ctx, once, name, "paused")


@router.post(
    "/journeys/{name}/resume",
    response_model=StatusOut,
    summary="Resume a paused journey",
    **guard("journeys:write"),
)
def resume_journey(name: str, ctx: Caller, once: Once) -> Response:
    return _set(ctx, once, name, "active")


@router.post(
    "/journeys/{name}/enrolments",
    response_model=Enrolled,
    summary="Enrol contacts by id (the journey's re-entry policy applies)",
    **guard("journeys:write"),
)
def enrol(name: str, body: EnrolIn, ctx: Caller, once: Once) -> Response:
    def act(session: Session) -> Enrolled:
        got = service.do_enrol(
            session,
            name,
            body.contact_ids,
            actor=ctx.principal.actor,
            principal=ctx.principal,
            clock=ctx.clock,
        )
        return Enrolled(enrolled=len(got.enrolled), refused=got.refused)

    return once.run(ctx, act)


@router.get(
    "/journeys/{name}/report",
    summary="Per step: entered, completed, waiting, exited, goal reached, sends, human "
    "opens and clicks; the funnel and the drop-off step (as `carepost journey report --json`)",
    responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    **guard("reports:read"),
)
def journey_report(name: str, ctx: Caller) -> dict[str, object]:
    with ctx.transaction() as session:
        return report.journey_report(session, name, principal=ctx.principal).as_dict()
