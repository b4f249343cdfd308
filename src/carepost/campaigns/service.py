"""Campaign use cases. Each change and its audit entry commit together (the caller owns
the transaction); starting a campaign freezes its audience and writes the outbox."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.campaigns.models import Campaign, SenderProfile
from carepost.clock import Clock, system_clock
from carepost.consent.records import valid_topic
from carepost.contacts.store import new_id
from carepost.content import mime
from carepost.content.models import Template
from carepost.delivery import outbox
from carepost.delivery.e2e import MODES as E2E_MODES
from carepost.delivery.models import OutboxMessage
from carepost.delivery.route import FALLBACKS, VERIFICATIONS
from carepost.staff.principal import Principal

if TYPE_CHECKING:
    from carepost.segments.snapshot import Snapshot


class CampaignError(ValueError):
    pass


class CampaignNotFound(CampaignError):
    pass


class CampaignStateError(CampaignError):
    """The campaign is not in a state the action applies to."""


def _require(principal: Principal | None, *permissions: str) -> None:
    # None is the trusted caller (the command line on the server, workers).
    if principal is not None:
        principal.require(*permissions)


TRANSITIONS = {
    "start": ({"draft"}, "running"),
    "pause": ({"running"}, "paused"),
    "resume": ({"paused"}, "running"),
    "cancel": ({"draft", "running", "paused"}, "cancelled"),
}


def add_sender(
    session: Session,
    *,
    sender_id: str,
    from_name: str,
    from_address: str,
    postal_address: str,
    organization_name: str,
    return_path: str | None = None,
    reply_to: str | None = None,
    dkim_domain: str | None = None,
    dkim_selector: str | None = None,
    dkim_key_file: str | None = None,
    tls_fallback: str = "portal",
    portal_verification: str = "code",
    e2e: str = "off",
    actor: Actor,
    clock: Clock = system_clock,
) -> SenderProfile:
    if tls_fallback not in FALLBACKS:
        raise CampaignError(f"tls fallback: one of {', '.join(FALLBACKS)}")
    if portal_verification not in VERIFICATIONS:
        raise CampaignError(f"portal verification: one of {', '.join(VERIFICATIONS)}")
    for label, value in (
        ("from address", from_address),
        ("reply-to", reply_to or "x@x.x"),
        ("return path", return_path or from_address),
    ):
        try:
            mime.format_address("", value)
        except mime.HeaderInjection as exc:
            raise CampaignError(f"{label}: not a plain mailbox") from exc
    if not postal_address.strip():
        raise CampaignError("a physical postal address is required (CAN-SPAM)")
    if e2e not in E2E_MODES:
        raise CampaignError(f"e2e must be one of {', '.join(E2E_MODES)}")
    row = SenderProfile(
        id=sender_id,
        from_name=from_name,
        from_address=from_address,
        reply_to=reply_to,
        return_path=return_path or from_address,
        postal_address=postal_address,
        organization_name=organization_name,
        dkim_domain=dkim_domain,
        dkim_selector=dkim_selector,
        dkim_key_file=dkim_key_file,
        tls_fallback=tls_fallback,
        portal_verification=portal_verification,
        e2e=e2e,
        created_at=clock(),
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="campaigns.sender_added",
        subjects=[sender_id],
        details={"e2e": e2e},
        clock=clock,
    )
    return row


def create_campaign(
    session: Session,
    *,
    name: str,
    segment: str,
    template_id: str,
    sender_id: str,
    topic: str,
    channel: str = "email",
    schedule_at: datetime | None = None,
    rate_per_minute: int | None = None,
    actor: Actor,
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> Campaign:
    _require(principal, "campaigns:write")
    template = session.get(Template, template_id)
    if template is None:
        raise CampaignError("no such template")
    if session.get(SenderProfile, sender_id) is None:
        raise CampaignError("no such sender profile")
    if not valid_topic(topic):
        raise CampaignError("topic must be 1-64 characters of a-z, 0-9, '-', '_', '.'")
    if rate_per_minute is not None and rate_per_minute < 1:
        raise CampaignError("rate must be at least 1 message a minute")
    row = Campaign(
        id=new_id(),
        name=name,
        segment=segment,
        template_id=template_id,
        message_class=template.message_class,
        channel=channel,
        topic=topic,
        sender_id=sender_id,
        status="draft",
        schedule_at=schedule_at,
        rate_per_minute=rate_per_minute,
        recipients=0,
        created_at=clock(),
        actor=actor.id,
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="campaigns.created",
        subjects=[row.id],
        details={
            "segment": segment,
            "template_id": template_id,
            "sender": sender_id,
            "message_class": row.message_class,
            "topic": topic,
        },
        clock=clock,
    )
    return row


def _move(session: Session, campaign_id: str, verb: str, at: datetime) -> Campaign:
    campaign = session.scalars(
        select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    ).first()
    if campaign is None:
        raise CampaignNotFound(f"no campaign {campaign_id}")
    sources, target = TRANSITIONS[verb]
    if campaign.status not in sources:
        raise CampaignStateError(f"cannot {verb} a campaign that is {campaign.status}")
    campaign.status = target
    return campaign


def start_campaign(
    session: Session,
    campaign_id: str,
    *,
    members: Sequence[str],
    membership_ref: str,
    actor: Actor,
    clock: Clock = system_clock,
    progress: Callable[[int], None] | None = None,
    principal: Principal | None = None,
) -> Campaign:
    """`members` is the audience frozen at this moment (segments.freeze_membership gives
    it and keeps the evidence under `membership_ref`); one outbox row each. `progress`
    gets the number of outbox rows of each chunk as it is written."""
    _require(principal, "campaigns:write")
    at = clock()
    campaign = _move(session, campaign_id, "start", at)
    campaign.started_at = at
    campaign.membership_ref = membership_ref
    start = campaign.schedule_at if campaign.schedule_at and campaign.schedule_at > at else at
    campaign.recipients = outbox.enqueue(
        session,
        campaign_id=campaign.id,
        contact_ids=dict.fromkeys(members),
        lane=outbox.LANE_CAMPAIGN,
        at=start,
        progress=progress,
    )
    audit.append(
        session,
        actor=actor,
        action="campaigns.started",
        subjects=[campaign.id],
        details={"recipients": campaign.recipients, "membership_ref": membership_ref},
        clock=clock,
    )
    return campaign


def change_status(
    session: Session,
    campaign_id: str,
    verb: str,
    *,
    actor: Actor,
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> Campaign:
    _require(principal, "campaigns:write")
    if verb not in ("pause", "resume", "cancel"):
        raise CampaignError(f"unknown action {verb}")
    at = clock()
    campaign = _move(session, campaign_id, verb, at)
    if verb == "cancel":
        campaign.finished_at = at
    past = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}[verb]
    audit.append(
        session, actor=actor, action=f"campaigns.{past}", subjects=[campaign.id], clock=clock
    )
    return campaign


@dataclass(frozen=True)
class CampaignStatus:
    id: str
    name: str
    status: str
    recipients: int
    states: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "recipients": self.recipients,
            "states": self.states,
        }


def campaign_status(
    session: Session, campaign_id: str, *, principal: Principal | None = None
) -> CampaignStatus:
    _require(principal, "campaigns:read")
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignNotFound(f"no campaign {campaign_id}")
    states = dict(
        session.execute(
            select(OutboxMessage.state, func.count())
            .where(OutboxMessage.campaign_id == campaign_id)
            .group_by(OutboxMessage.state)
        ).all()
    )
    return CampaignStatus(
        campaign.id,
        campaign.name,
        campaign.status,
        campaign.recipients,
        {str(k): int(v) for k, v in states.items()},
    )


def do_create_campaign(
    session: Session,
    *,
    name: str,
    segment: str,
    template: str,
    sender_id: str,
    topic: str,
    message_class: str | None = None,
    schedule_at: datetime | None = None,
    rate_per_minute: int | None = None,
    actor: Actor,
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> Campaign:
    """A draft campaign by names (what `campaign create` and the API take): the
    template's newest version, a saved segment or list; `message_class`, when given,
    must be the template's."""
    from carepost.content.service import latest_template
    from carepost.segments.service import SegmentError, get_segment

    _require(principal, "campaigns:write")
    tpl = latest_template(session, template)
    if tpl is None:
        raise CampaignError(f"no template named {template!r}")
    if message_class is not None and message_class != tpl.message_class:
        raise CampaignError(f"template {template!r} is of class {tpl.message_class}")
    if schedule_at is not None and schedule_at.tzinfo is None:
        raise CampaignError("a schedule needs a time zone")
    try:
        get_segment(session, segment)
    except SegmentError as exc:
        raise CampaignError(str(exc)) from None
    return create_campaign(
        session,
        name=name,
        segment=segment,
        template_id=tpl.id,
        sender_id=sender_id,
        topic=topic,
        schedule_at=schedule_at,
        rate_per_minute=rate_per_minute,
        actor=actor,
        clock=clock,
    )


def do_start_from_segment(
    session: Session,
    campaign_id: str,
    *,
    snapshot: Snapshot,
    at: datetime,
    actor: Actor,
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> Campaign:
    """Freeze the campaign's segment over `snapshot` (refreshed by the caller) at `at`
    and queue one message per member, in the caller's transaction: the evidence, the
    outbox and both audit entries commit together or not at all."""
    from carepost.segments.service import freeze_membership, frozen_members, get_segment

    _require(principal, "campaigns:write")
    campaign = session.scalars(
        select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    ).first()
    if campaign is None or campaign.kind != "campaign":
        raise CampaignNotFound(f"no campaign {campaign_id}")
    if campaign.status != "draft":
        raise CampaignStateError(f"cannot start a campaign that is {campaign.status}")
    freeze = freeze_membership(
        session,
        get_segment(session, campaign.segment),
        at=at,
        actor=actor,
        campaign_id=campaign_id,
        snapshot=snapshot,
        clock=clock,
    )
    return start_campaign(
        session,
        campaign_id,
        members=frozen_members(session, freeze.id),
        membership_ref=freeze.id,
        actor=actor,
        clock=clock,
    )


def campaign_page(
    session: Session, *, after: str | None, limit: int, principal: Principal | None = None
) -> list[Campaign]:
    """Up to `limit` campaigns, newest first (ids are time-ordered), older than the id
    `after`. Journeys' hidden send campaigns are left out."""
    _require(principal, "campaigns:read")
    query = (
        select(Campaign)
        .where(Campaign.kind == "campaign")
        .order_by(Campaign.id.desc())
        .limit(limit)
    )
    if after is not None:
        query = query.where(Campaign.id < after)
    return list(session.scalars(query))
