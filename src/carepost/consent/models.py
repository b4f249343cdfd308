"""Consent tables. Plain columns hold ids, codes, times and flags (what the gate needs,
no decryption); the signed authorization document, which names the patient's
information, people and the signer's network address, is sealed under the contact's
data key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from carepost.db import Base, UTCDateTime


class Consent(Base):
    """One consent statement. Rows are only appended: the latest `effective_at` (then
    `recorded_at`) for a (contact, channel, topic) is in force; older rows are history."""

    __tablename__ = "consents"
    __table_args__ = (Index("ix_consents_contact_channel_topic", "contact_id", "channel", "topic"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    contact_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("contacts.id", ondelete="CASCADE")
    )
    channel: Mapped[str] = mapped_column(String(8))
    topic: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12))  # opted_in | opted_out
    source: Mapped[str] = mapped_column(String(20))  # import|form|api|unsubscribe_link|staff
    evidence_ref: Mapped[str] = mapped_column(String(256))  # opaque reference, never PHI
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))


class Authorization(Base):
    """A HIPAA authorization (45 CFR 164.508(c)). Saved only with every required element;
    `document` holds the validated JSON (descriptions, names, signed text, signer address)
    sealed with AAD `authorizations|document|id|dek_version`."""

    __tablename__ = "authorizations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    contact_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    purposes: Mapped[str] = mapped_column(String(256))  # space-separated purpose codes
    recipients: Mapped[str] = mapped_column(Text)  # space-separated sender ids
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    signature_method: Mapped[str] = mapped_column(String(32))
    signed_text_sha256: Mapped[str] = mapped_column(String(64))
    signed_by_representative: Mapped[bool] = mapped_column(Boolean)
    remuneration_statement: Mapped[bool] = mapped_column(Boolean)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    has_expiry_event: Mapped[bool] = mapped_column(Boolean)
    expiry_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revocation_source: Mapped[str | None] = mapped_column(String(20), nullable=True)
    revocation_evidence_ref: Mapped[str | None] = mapped_column(String(256), nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    dek_version: Mapped[int] = mapped_column(Integer)
    document: Mapped[bytes] = mapped_column(LargeBinary)


class Suppression(Base):
    """An address that must not be mailed, by blind index (`email` or `phone` kind, as in
    contact_lookups). Removal keeps the row (removed_at), so the history stays."""

    __tablename__ = "suppressions"
    __table_args__ = (Index("ix_suppressions_address", "channel", "address_bi"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(8))
    address_bi: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20))
    evidence_ref: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    removed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)


class GateRun(Base):
    """One evaluation of the gate for a batch of one campaign's message."""

    __tablename__ = "gate_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(64), index=True)
    message_class: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(8))
    topic: Mapped[str] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    allowed: Mapped[int] = mapped_column(Integer)
    denied: Mapped[int] = mapped_column(Integer)


class GateDecision(Base):
    """One recipient's decision in a run: compact (flag, reason codes, authorization)."""

    __tablename__ = "gate_decisions"
    __table_args__ = (
        Index("ix_gate_decisions_campaign_contact", "campaign_id", "contact_id"),
        {"sqlite_with_rowid": False},
    )

    run_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("gate_runs.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(64))
    allowed: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[str] = mapped_column(String(512))  # space-separated reason codes
    authorization_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
