"""Campaigns: create a draft, list, read its status (messages by outbox state), start
(freeze the segment over the API's snapshot and queue the outbox), pause, resume, and
the report (the same JSON as `carepost report campaign --json`; de-identified counts,
so `reports:read`)."""

from __future__ import annotations

from datetime import datetime

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from carepost.api.context import ApiContext, Caller, guard
from carepost.api.idempotency import IdempotentRequest, Once
from carepost.api.pagination import CursorParam, Limit, Page, after_id, page_of
from carepost.api.params import Rfc3339
from carepost.api.problems import Problem
from carepost.api.routes.segments import shared
from carepost.api.text_guard import NulFreeRoute
from carepost.campaigns import service
from carepost.campaigns.models import Campaign
from carepost.reports import service as reports
from carepost.reports.splits import DEFAULT_MIN_DOMAIN_RECIPIENTS
from carepost.segments.service import SegmentEngine

router = APIRouter(tags=["campaigns"], route_class=NulFreeRoute)


class CampaignIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    segment: str = Field(min_length=1, max_length=64, description="A saved segment or list.")
    template: str = Field(min_length=1, max_length=64, description="Its newest version is sent.")
    message_class: str | None = Field(
        None, max_length=16, description="When given, must be the template's class."
    )
    sender: str = Field(min_length=1, max_length=64, description="Sender profile id.")
    topic: str = Field(min_length=1, max_length=64, description="Consent topic.")
    schedule_at: Rfc3339 | None = Field(None, description="Send from this time.")
    rate_per_minute: int | None = Field(None, ge=1, le=1_000_000)


class CampaignOut(BaseModel):
    id: str
    name: str
    status: str
    segment: str
    template_id: str
    message_class: str
    topic: str
    sender: str
    schedule_at: datetime | None
    rate_per_minute: int | None
    recipients: int
    membership_ref: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class CampaignStatus(CampaignOut):
    states: dict[str, int]  # outbox messages by state


def _out(row: Campaign) -> CampaignOut:
    return CampaignOut(
        id=row.id,
        name=row.name,
        status=row.status,
        segment=row.segment,
        template_id=row.template_id,
        message_class=row.message_class,
        topic=row.topic,
        sender=row.sender_id,
        schedule_at=row.schedule_at,
        rate_per_minute=row.rate_per_minute,
        recipients=row.recipients,
        membership_ref=row.membership_ref,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _campaign(session: Session, campaign_id: str) -> Campaign:
    """A campaign of this API (a journey's hidden send campaign moves with its journey)."""
    row = session.get(Campaign, campaign_id)
    if row is None or row.kind != "campaign":
        raise service.CampaignNotFound(f"no campaign {campaign_id}")
    return row


@router.post(
    "/campaigns",
    response_model=CampaignOut,
    status_code=201,
    summary="Create a draft campaign (nothing is sent until it is started)",
    **guard("campaigns:write"),
)
def create_campaign(body: CampaignIn, ctx: Caller, once: Once) -> Response:
    def act(session: Session) -> CampaignOut:
        row = service.do_create_campaign(
            session,
            name=body.name,
            segment=body.segment,
            template=body.template,
            message_class=body.message_class,
            sender_id=body.sender,
            topic=body.topic,
            schedule_at=body.schedule_at,
            rate_per_minute=body.rate_per_minute,
            actor=ctx.principal.actor,
            principal=ctx.principal,
            clock=ctx.clock,
        )
        return _out(row)

    return once.run(ctx, act, status=201)


@router.get(
    "/campaigns",
    response_model=Page[CampaignOut],
    summary="Campaigns, newest first",
    **guard("campaigns:read"),
)
def list_campaigns(ctx: Caller, limit: Limit = 50, cursor: CursorParam = None) -> Page[CampaignOut]:
    after = after_id(cursor)
    with ctx.transaction() as session:
        rows = service.campaign_page(session, after=after, limit=limit + 1, principal=ctx.principal)
        return page_of(rows, limit, lambda r: [r.id], _out)


@router.get(
    "/campaigns/{campaign_id}",
    response_model=CampaignStatus,
    summary="A campaign and its messages by outbox state",
    **guard("campaigns:read"),
)
def get_campaign(campaign_id: str, ctx: Caller) -> CampaignStatus:
    with ctx.transaction() as session:
        row = _campaign(session, campaign_id)
        status = service.campaign_status(session, campaign_id, principal=ctx.principal)
        return CampaignStatus(**_out(row).model_dump(), states=status.states)


@router.post(
    "/campaigns/{campaign_id}/start",
    response_model=CampaignOut,
    summary="Freeze the segment's members now and queue one message each",
    **guard("campaigns:write"),
)
def start_campaign(campaign_id: str, ctx: Caller, request: Request, once: Once) -> Response:
    def start(engine: SegmentEngine) -> Response:
        # Refreshed before the action's transaction opens: the snapshot reads on its own
        # connections, which must not wait on this request's write.
        engine.refresh(force=True)

        def act(session: Session) -> CampaignOut:
            _campaign(session, campaign_id)
            row = service.do_start_from_segment(
                session,
                campaign_id,
                snapshot=engine.snapshot,
                at=ctx.at,
                actor=ctx.principal.actor,
                principal=ctx.principal,
                clock=ctx.clock,
            )
            return _out(row)

        return once.run(ctx, act)

    return shared(request).use(start)


def _change(ctx: ApiContext, once: IdempotentRequest, campaign_id: str, verb: str) -> Response:
    # With a key, a retried pause replays "paused" rather than a 409 "already paused".
    def act(session: Session) -> CampaignOut:
        _campaign(session, campaign_id)
        row = service.change_status(
            session,
            campaign_id,
            verb,
            actor=ctx.principal.actor,
            principal=ctx.principal,
            clock=ctx.clock,
        )
        return _out(row)

    return once.run(ctx, act)


@router.post(
    "/campaigns/{campaign_id}/pause",
    response_model=CampaignOut,
    summary="Stop claiming the campaign's messages (in-flight ones finish)",
    **guard("campaigns:write"),
)
def pause_campaign(campaign_id: str, ctx: Caller, once: Once) -> Response:
    return _change(ctx, once, campaign_id, "pause")


@router.post(
    "/campaigns/{campaign_id}/resume",
    response_model=CampaignOut,
    summary="Claim the campaign's messages again",
    **guard("campaigns:write"),
)
def resume_campaign(campaign_id: str, ctx: Caller, once: Once) -> Response:
    return _change(ctx, once, campaign_id, "resume")


@router.get(
    "/campaigns/{campaign_id}/report",
    summary="The campaign report (as `carepost report campaign --json`)",
    response_description="Delivery, engagement (human and machine apart) and the splits; "
    "see docs/architecture.md, 'JSON' under campaign reporting.",
    responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    **guard("reports:read"),
)
def campaign_report(
    campaign_id: str,
    ctx: Caller,
    include_machine: bool = Query(False, description="Count machine events in the headline."),
    min_domain_recipients: int = Query(DEFAULT_MIN_DOMAIN_RECIPIENTS, ge=1, le=1_000_000),
    clauses: bool = Query(True, description="The segment clause split (audited decryption)."),
) -> Response:
    with ctx.transaction() as session:
        _campaign(session, campaign_id)
    options = reports.Options(
        include_machine=include_machine,
        min_domain_recipients=min_domain_recipients,
        clauses=clauses,
    )
    report = reports.campaign_report(
        ctx.workspace.engine,
        ctx.workspace.keyring,
        campaign_id,
        options=options,
        actor=ctx.principal.actor,
        principal=ctx.principal,
        clock=ctx.clock,
    )
    if report.campaign.id != campaign_id:  # `ref` is an id or a name; the path is an id
        raise Problem(404, "not-found", f"no campaign {campaign_id}")
    with ctx.transaction() as session:
        reports.do_record_view(session, report, actor=ctx.principal.actor, principal=ctx.principal)
    # The CLI's --json writer, so the two documents are byte for byte the same shape.
    return Response(orjson.dumps(report.as_dict()), media_type="application/json")
