"""Proof of delivery for one message: what was decided, what was sent, and what the relay
said, from the database alone. No PHI: ids, hashes, codes, times, the relay's reply with
the recipient address removed. The sent bytes themselves are in the archive, sealed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.campaigns.models import Campaign
from carepost.clock import isoformat_utc
from carepost.consent.models import GateDecision, GateRun
from carepost.content.models import Template
from carepost.delivery.models import DeliveryAttempt, OutboxMessage
from carepost.delivery.timeline import read as read_timeline
from carepost.portal.service import evidence as portal_evidence
from carepost.segments.models import SegmentFreeze
from carepost.staff.principal import Principal

# States a worker's prepare writes at the time its gate run carries.
_GATED = frozenset({"attempt_started", "denied", "failed"})


class NoSuchMessage(LookupError):
    pass


def _t(value: Any) -> str | None:
    return isoformat_utc(value) if value is not None else None


def evidence(
    session: Session, outbox_id: str, *, principal: Principal | None = None
) -> dict[str, Any]:
    if principal is not None:
        principal.require("evidence:read")
    row = session.get(OutboxMessage, outbox_id)
    if row is None:
        raise NoSuchMessage(f"no message {outbox_id}")
    campaign = session.get(Campaign, row.campaign_id) if row.campaign_id else None
    template = session.get(Template, campaign.template_id) if campaign else None
    freeze = (
        session.get(SegmentFreeze, campaign.membership_ref)
        if campaign is not None and campaign.membership_ref
        else None
    )
    decisions = session.execute(
        select(
            GateRun.id,
            GateRun.decided_at,
            GateDecision.allowed,
            GateDecision.reasons,
            GateDecision.authorization_id,
        )
        .join(GateDecision, GateDecision.run_id == GateRun.id)
        .where(
            GateDecision.contact_id == row.contact_id,
            GateDecision.campaign_id == (row.campaign_id or ""),
        )
        .order_by(GateRun.decided_at)
    ).all()
    timeline = read_timeline(session, outbox_id)
    if campaign is not None and campaign.kind != "campaign":
        # A hidden campaign (one-off messages, journey steps) can send to one contact many
        # times: keep the gate runs of this message's own prepares, which record their
        # outcome at the gate run's time.
        mine = {at for state, at, _ in timeline if state in _GATED}
        decisions = [d for d in decisions if d[1] in mine]
    attempts = session.scalars(
        select(DeliveryAttempt)
        .where(DeliveryAttempt.outbox_id == outbox_id)
        .order_by(DeliveryAttempt.attempt)
    ).all()
    return {
        "outbox_id": row.id,
        "contact_id": row.contact_id,
        "state": row.state,
        "last_reason": row.last_reason,
        "campaign": None
        if campaign is None
        else {
            "id": campaign.id,
            "name": campaign.name,
            "message_class": campaign.message_class,
            "topic": campaign.topic,
            "sender": campaign.sender_id,
            "template": None
            if template is None
            else {"id": template.id, "name": template.name, "version": template.version},
            "membership": None
            if freeze is None
            else {
                "freeze_id": freeze.id,
                "segment": freeze.segment_name,
                "rule_version": freeze.version,
                "evaluated_at": _t(freeze.evaluated_at),
                "members": freeze.member_count,
                "members_sha256": freeze.members_sha256,
            },
        },
        "consent_decisions": [
            {
                "gate_run": run_id,
                "decided_at": _t(at),
                "allowed": bool(allowed),
                "reasons": reasons.split() if reasons else [],
                "authorization_id": auth,
            }
            for run_id, at, allowed, reasons, auth in decisions
        ],
        "attempts": [
            {
                "attempt": a.attempt,
                "transport": a.transport,
                "method": a.method,
                "message_id": a.message_id,
                "sha256": a.sha256,
                "size": a.size,
                "dkim_signature": a.dkim,
                "started_at": _t(a.started_at),
                "finished_at": _t(a.finished_at),
                "status": a.status,
                "reason": a.reason,
                "code": a.code,
                "relay_reply": a.reply,
                "tls_version": a.tls_version,
                "tls_cipher": a.tls_cipher,
            }
            for a in attempts
        ],
        "timeline": [
            {"state": state, "at": _t(at), "detail": detail} for state, at, detail in timeline
        ],
        # Set when the message went to the portal: why, the notice, and the read receipt.
        "portal": portal_evidence(session, outbox_id),
    }
