"""Bounce and complaint counts per campaign and per sending domain, and the complaint-rate
alert (the rules and their reasons are in rates.py). Reads ids, states and codes only.

A message counts once per kind however many reports arrive about it; one refused live
(a 5xx reply during delivery, which the worker already acted on) counts as a bounce too,
of the kind `delivery.outcome` gave it, so the rate covers every way mail comes back.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from carepost.bounces.models import BounceEvent, ComplaintAlert
from carepost.bounces.rates import (
    NOT_A_PERSON,
    Counts,
    RatePolicy,
    crossing,
    live_kind,
    over_limit,
)
from carepost.campaigns.models import Campaign, SenderProfile
from carepost.contacts.store import new_id
from carepost.delivery.models import DeliveryAlert, DeliveryAttempt, OutboxMessage

ALERT_KIND = "complaint_rate"


def _domain_campaigns(session: Session, domain: str, since: datetime | None) -> list[str]:
    query = (
        select(Campaign.id)
        .join(SenderProfile, SenderProfile.id == Campaign.sender_id)
        .where(func.lower(SenderProfile.from_address).like(f"%@{domain.lower()}"))
    )
    if since is not None:
        # Campaigns that ended before the window cannot have sent in it.
        query = query.where(or_(Campaign.finished_at.is_(None), Campaign.finished_at >= since))
    return list(session.execute(query).scalars())


def _counts(
    session: Session,
    campaign_ids: Collection[str],
    events_where: list[Any],
    since: datetime | None,
) -> Counts:
    if not campaign_ids:
        sent = 0
        live: Iterable[Any] = []
    else:
        ids = list(campaign_ids)
        sent_q = select(func.count()).where(
            OutboxMessage.campaign_id.in_(ids), OutboxMessage.state == "sent"
        )
        live_q = (
            select(DeliveryAttempt.outbox_id, DeliveryAttempt.code, DeliveryAttempt.reply)
            .join(OutboxMessage, OutboxMessage.id == DeliveryAttempt.outbox_id)
            .where(
                OutboxMessage.campaign_id.in_(ids),
                DeliveryAttempt.status == "failed",
                DeliveryAttempt.reason == "reply_5xx",
            )
        )
        if since is not None:
            sent_q = sent_q.where(OutboxMessage.updated_at >= since)
            live_q = live_q.where(DeliveryAttempt.finished_at >= since)
        sent = int(session.execute(sent_q).scalar_one())
        live = session.execute(live_q).all()
    hard: set[str] = set()
    soft: set[str] = set()
    rejected: set[str] = set()
    for outbox_id, code, reply in live:
        rejected.add(outbox_id)
        (hard if live_kind(code, reply) == "hard" else soft).add(outbox_id)
    complaints: set[str] = set()
    events = session.execute(
        select(BounceEvent.outbox_id, BounceEvent.category, BounceEvent.feedback_type).where(
            BounceEvent.category.in_(("bounce-hard", "bounce-soft", "complaint")), *events_where
        )
    ).all()
    for outbox_id, category, feedback_type in events:
        if category == "bounce-hard":
            hard.add(outbox_id)
        elif category == "bounce-soft":
            soft.add(outbox_id)
        elif feedback_type not in NOT_A_PERSON:
            complaints.add(outbox_id)
    return Counts(sent, len(rejected), len(hard), len(soft - hard), len(complaints))


def campaign_counts(session: Session, campaign_id: str) -> Counts:
    return _counts(session, [campaign_id], [BounceEvent.campaign_id == campaign_id], None)


def domain_counts(session: Session, domain: str, at: datetime, policy: RatePolicy) -> Counts:
    since = at - policy.domain_window
    return _counts(
        session,
        _domain_campaigns(session, domain, since),
        [BounceEvent.sending_domain == domain.lower(), BounceEvent.received_at >= since],
        since,
    )


def _open_alert(session: Session, scope: str, key: str) -> ComplaintAlert | None:
    return session.execute(
        select(ComplaintAlert).where(
            ComplaintAlert.scope == scope,
            ComplaintAlert.scope_key == key,
            ComplaintAlert.cleared_at.is_(None),
        )
    ).scalar_one_or_none()


def check_complaint_alerts(
    session: Session,
    *,
    campaign_id: str | None,
    domain: str,
    at: datetime,
    policy: RatePolicy,
    complaint: bool = True,
) -> list[str]:
    """Raise or clear the complaint-rate alert of the campaign and the sending domain a
    new event belongs to. Counting is skipped for an event that cannot push a rate up
    unless an alert is open (which it may clear). Returns the new delivery_alerts ids."""
    raised: list[str] = []
    scopes = [("domain", domain)] + ([("campaign", campaign_id)] if campaign_id else [])
    for scope, key in scopes:
        alert = _open_alert(session, scope, key)
        if alert is None and not complaint:
            continue
        counts = (
            campaign_counts(session, key)
            if scope == "campaign"
            else domain_counts(session, key, at, policy)
        )
        step = crossing(alert is not None, over_limit(counts, policy))
        if step == "clear" and alert is not None:
            alert.cleared_at = at
        elif step == "raise":
            window = "" if scope == "campaign" else f" in the last {_hours(policy)} h"
            detail = (
                f"complaint rate {counts.complaint_rate:.2%} is over "
                f"{policy.limit:.1%} for {scope} {key}{window}: "
                f"{counts.complaints} complaints, {counts.sent} delivered"
            )
            alert_id = new_id()
            session.add(
                DeliveryAlert(
                    id=alert_id, at=at, kind=ALERT_KIND, detail=detail, count=counts.complaints
                )
            )
            session.add(
                ComplaintAlert(
                    id=new_id(),
                    scope=scope,
                    scope_key=key,
                    raised_at=at,
                    cleared_at=None,
                    delivery_alert_id=alert_id,
                )
            )
            raised.append(alert_id)
    return raised


def _hours(policy: RatePolicy) -> str:
    return f"{policy.domain_window.total_seconds() / 3600:g}"


def _row(key: str, counts: Counts, policy: RatePolicy, alert_open: bool) -> dict[str, Any]:
    return {
        "key": key,
        "sent": counts.sent,
        "rejected": counts.rejected,
        "hard": counts.hard,
        "soft": counts.soft,
        "complaints": counts.complaints,
        "hard_rate": round(counts.hard_rate, 6),
        "soft_rate": round(counts.soft_rate, 6),
        "complaint_rate": round(counts.complaint_rate, 6),
        "over_limit": over_limit(counts, policy),
        "alert_open": alert_open,
    }


def rates(
    session: Session,
    *,
    at: datetime,
    policy: RatePolicy,
    campaign_id: str | None = None,
    domain: str | None = None,
) -> dict[str, Any]:
    """Every started campaign (or one) and every sending domain (or one)."""
    if campaign_id is not None:
        campaign_ids = [campaign_id] if session.get(Campaign, campaign_id) is not None else []
    elif domain is not None:
        campaign_ids = _domain_campaigns(session, domain, None)
    else:
        campaign_ids = list(
            session.execute(
                select(Campaign.id).where(Campaign.status != "draft").order_by(Campaign.id)
            ).scalars()
        )
    if domain is not None:
        domains = [domain.lower()]
    elif campaign_id is not None:
        domains = sorted(
            {
                address.rsplit("@", 1)[-1].lower()
                for address in session.execute(
                    select(SenderProfile.from_address)
                    .join(Campaign, Campaign.sender_id == SenderProfile.id)
                    .where(Campaign.id == campaign_id)
                ).scalars()
            }
        )
    else:
        domains = sorted(
            {
                address.rsplit("@", 1)[-1].lower()
                for address in session.execute(select(SenderProfile.from_address)).scalars()
            }
        )
    return {
        "limit": policy.limit,
        "min_delivered": policy.min_delivered,
        "domain_window_hours": policy.domain_window.total_seconds() / 3600,
        "campaigns": [
            _row(
                c,
                campaign_counts(session, c),
                policy,
                _open_alert(session, "campaign", c) is not None,
            )
            for c in campaign_ids
        ],
        "domains": [
            _row(
                d,
                domain_counts(session, d, at, policy),
                policy,
                _open_alert(session, "domain", d) is not None,
            )
            for d in domains
        ],
    }
