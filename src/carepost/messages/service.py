"""Send one message: a treatment, operations or transactional message to one contact.

A one-off message is an outbox row in the first lane (outbox.LANE_ONE_OFF) of a hidden
campaign (`campaigns.kind = 'one_off'`), one per (template version, sender, class, topic,
actor) and reused by every message sent with them, so the worker's per-campaign kit (compiled
template, DKIM signer, route) serves one-off messages unchanged and the consent gate runs
at claim time exactly as for a campaign. The actor is part of the key because
`campaigns.actor` is who sent to a recipient for staff/access.recipients_of (the
`phi:read_recipients` basis): a campaign shared by two users would let one read the PHI
of the other's recipients. The hidden campaign stays `running`: the worker
closes only kind 'campaign'. The per-message data is sealed under the contact's data key
(messages/models.py) and never enters the queue row, a log or an error.

`do_send_message` changes state and writes its audit entry in the caller's transaction
(ids only in the entry)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.campaigns.models import Campaign, SenderProfile
from carepost.consent.records import valid_topic
from carepost.contacts.models import Contact, ContactKey
from carepost.contacts.store import new_id
from carepost.content.models import Template
from carepost.content.service import latest_template
from carepost.crypto.envelope import unwrap_dek
from carepost.crypto.keyring import KeyRing
from carepost.delivery import outbox
from carepost.delivery.models import OutboxMessage
from carepost.delivery.timeline import read as read_timeline
from carepost.messages.data import DataValue, check_data, declared_keys, seal_data
from carepost.messages.models import MessageData
from carepost.staff.principal import Principal

KIND = "one_off"
ONE_OFF_CLASSES = ("treatment", "operations", "transactional")
PERMISSION = "messages:send"
_ID = re.compile(r"^[0-9a-f]{32}$")


class MessageError(ValueError):
    """A refused send. `field` names what is wrong (never a value), `status` is what the
    API answers: 404 for something that does not exist, 422 for a bad request."""

    def __init__(self, field: str, detail: str, *, status: int = 422) -> None:
        self.field = field
        self.detail = detail
        self.status = status
        super().__init__(f"{field}: {detail}")


@dataclass(frozen=True)
class SentMessage:
    id: str  # the outbox row: the Message-ID's local part and the evidence's key
    status: str
    contact_id: str
    campaign_id: str
    template_id: str
    message_class: str
    sender_id: str
    topic: str
    created_at: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "status": self.status,
            "contact_id": self.contact_id,
            "campaign_id": self.campaign_id,
            "template_id": self.template_id,
            "message_class": self.message_class,
            "sender_id": self.sender_id,
            "topic": self.topic,
            "created_at": self.created_at.isoformat(),
        }


def _template(session: Session, ref: str) -> Template:
    row = session.get(Template, ref) if _ID.match(ref) else None
    row = row or latest_template(session, ref)
    if row is None:
        raise MessageError("template", f"no template {ref[:64]!r}", status=404)
    return row


def _sender(session: Session, sender: str | None) -> str:
    if sender:
        if session.get(SenderProfile, sender) is None:
            raise MessageError("sender", f"no sender profile {sender[:64]!r}", status=404)
        return sender
    ids = list(session.scalars(select(SenderProfile.id).limit(2)))
    if len(ids) != 1:
        raise MessageError("sender", "required when there is not exactly one sender profile")
    return ids[0]


def _contact_cipher(session: Session, ring: KeyRing, contact_id: str) -> tuple[int, AESGCM]:
    """The contact's data key, to seal the message's data (nothing is decrypted)."""
    if not _ID.match(contact_id) or session.get(Contact, contact_id) is None:
        raise MessageError("contact_id", "no such contact", status=404)
    key = session.execute(
        select(ContactKey.dek_version, ContactKey.kek_version, ContactKey.wrapped_dek).where(
            ContactKey.contact_id == contact_id
        )
    ).first()
    if key is None:
        raise MessageError("contact_id", "the contact's data was erased", status=404)
    dek_version, kek_version, wrapped = key
    return dek_version, AESGCM(unwrap_dek(ring, bytes(wrapped), kek_version, contact_id))


def hidden_campaign(
    session: Session,
    *,
    template: Template,
    sender_id: str,
    message_class: str,
    topic: str,
    actor_id: str,
    at: datetime,
) -> str:
    """The one-off campaign for these (template version, sender, class, topic, actor),
    made on first use. The template row is locked before making it so two first sends at once
    (PostgreSQL) make one, not two."""
    query = (
        select(Campaign.id)
        .where(
            Campaign.kind == KIND,
            Campaign.template_id == template.id,
            Campaign.sender_id == sender_id,
            Campaign.message_class == message_class,
            Campaign.topic == topic,
            Campaign.channel == "email",
            Campaign.actor == actor_id[:128],
        )
        .order_by(Campaign.id)
        .limit(1)
    )
    found = session.scalar(query)
    if found is not None:
        return found
    session.execute(select(Template.id).where(Template.id == template.id).with_for_update())
    found = session.scalar(query)
    if found is not None:
        return found
    campaign = Campaign(
        id=new_id(),
        name=f"one-off {template.name} v{template.version}"[:128],
        segment="one_off",
        template_id=template.id,
        message_class=message_class,
        channel="email",
        topic=topic,
        sender_id=sender_id,
        status="running",
        recipients=0,
        created_at=at,
        started_at=at,
        actor=actor_id[:128],
        kind=KIND,
    )
    session.add(campaign)
    session.flush()
    return campaign.id


def do_send_message(
    session: Session,
    ring: KeyRing,
    *,
    principal: Principal,
    contact_id: str,
    template: str,
    message_class: str,
    data: Mapping[str, DataValue],
    sender: str | None = None,
    topic: str | None = None,
    at: datetime,
) -> SentMessage:
    """Queue one message in the one-off lane; the consent gate decides at claim time.
    `template` is a template id or name (its latest version); `topic` (default: the
    class) is what an opt-out of this kind of message names. Raises PermissionDenied or
    MessageError (data problems: messages.data.DataRejected)."""
    principal.require(PERMISSION)
    if message_class not in ONE_OFF_CLASSES:
        raise MessageError(
            "message_class",
            f"one of {', '.join(ONE_OFF_CLASSES)}; marketing goes by a campaign, which "
            "checks HIPAA authorizations",
        )
    row = _template(session, template)
    if row.message_class != message_class:
        raise MessageError(
            "message_class", f"the template {row.name!r} is of class {row.message_class}"
        )
    values = check_data(declared_keys(row.phi_fields.split()), data)
    topic = topic or message_class
    if not valid_topic(topic):
        raise MessageError("topic", "1-64 characters of a-z, 0-9, '-', '_', '.'")
    sender_id = _sender(session, sender)
    dek_version, cipher = _contact_cipher(session, ring, contact_id)
    campaign_id = hidden_campaign(
        session,
        template=row,
        sender_id=sender_id,
        message_class=message_class,
        topic=topic,
        actor_id=principal.actor.id,
        at=at,
    )
    outbox_id = outbox.enqueue_one(
        session, campaign_id=campaign_id, contact_id=contact_id, lane=outbox.LANE_ONE_OFF, at=at
    )
    if values:
        session.add(
            MessageData(
                outbox_id=outbox_id,
                dek_version=dek_version,
                body=seal_data(cipher, outbox_id, dek_version, values),
            )
        )
        session.flush()
    audit.append(
        session,
        actor=principal.actor,
        action="messages.queued",
        subjects=[outbox_id, contact_id],
        details={
            "campaign_id": campaign_id,
            "template_id": row.id,
            "message_class": message_class,
            "sender": sender_id,
            "topic": topic,
            "data_keys": sorted(values),  # the template's declared names, not values
            "api_key_id": principal.api_key_id,
        },
        clock=lambda: at,
    )
    return SentMessage(
        outbox_id, "queued", contact_id, campaign_id, row.id, message_class, sender_id, topic, at
    )


@dataclass(frozen=True)
class MessageStatus:
    id: str
    status: str
    reason: str | None
    attempts: int
    contact_id: str
    created_at: datetime
    updated_at: datetime
    timeline: list[tuple[str, datetime]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "reason": self.reason,
            "attempts": self.attempts,
            "contact_id": self.contact_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "timeline": [{"state": s, "at": t.isoformat()} for s, t in self.timeline],
        }


def message_status(session: Session, *, principal: Principal, message_id: str) -> MessageStatus:
    """Where a one-off message stands: state, reason code, attempts, every state change
    with its time. No PHI (the gate's reasons are codes; evidence has the rest)."""
    principal.require(PERMISSION)
    row = session.execute(
        select(OutboxMessage)
        .join(Campaign, Campaign.id == OutboxMessage.campaign_id)
        .where(OutboxMessage.id == message_id, Campaign.kind == KIND)
    ).scalar_one_or_none()
    if row is None:
        raise MessageError("id", "no such message", status=404)
    timeline = [(state, at) for state, at, _ in read_timeline(session, message_id)]
    return MessageStatus(
        row.id,
        row.state,
        row.last_reason,
        row.attempts,
        row.contact_id,
        row.created_at,
        row.updated_at,
        timeline,
    )
