"""Sender profiles and campaigns: who sends, what, to whom, and where it stands."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from carepost.db import Base, UTCDateTime


class SenderProfile(Base):
    """The sending identity. Its id is what HIPAA authorizations name as a recipient
    (the consent gate's `sender`)."""

    __tablename__ = "sender_profiles"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    from_name: Mapped[str] = mapped_column(String(128))
    from_address: Mapped[str] = mapped_column(String(254))
    reply_to: Mapped[str | None] = mapped_column(String(254), nullable=True)
    return_path: Mapped[str] = mapped_column(String(254))
    postal_address: Mapped[str] = mapped_column(String(512))
    organization_name: Mapped[str] = mapped_column(String(128))
    dkim_domain: Mapped[str | None] = mapped_column(String(253), nullable=True)
    dkim_selector: Mapped[str | None] = mapped_column(String(63), nullable=True)
    dkim_key_file: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What a recipient server without the required TLS leads to (delivery.route):
    # "portal" (notice + secure pickup) or "fail". And how the portal checks the reader:
    # "code" (a one-time code mailed to the same address) or "dob" (date of birth).
    tls_fallback: Mapped[str] = mapped_column(String(8), server_default="portal")
    portal_verification: Mapped[str] = mapped_column(String(8), server_default="code")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # End-to-end encryption (delivery/e2e.py): off | smime | pgp | prefer.
    e2e: Mapped[str] = mapped_column(String(8), server_default="off", default="off")


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    segment: Mapped[str] = mapped_column(String(64))
    template_id: Mapped[str] = mapped_column(String(32), ForeignKey("templates.id"))
    message_class: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(8))
    topic: Mapped[str] = mapped_column(String(64))
    sender_id: Mapped[str] = mapped_column(String(64), ForeignKey("sender_profiles.id"))
    # draft -> running <-> paused -> done; cancelled from draft/running/paused
    status: Mapped[str] = mapped_column(String(12), index=True)
    schedule_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rate_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recipients: Mapped[int] = mapped_column(Integer)
    membership_ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    actor: Mapped[str] = mapped_column(String(128))
    # 'campaign', or 'journey': the hidden campaign of one journey send step, which stays
    # running while its journey is published (the worker never closes it).
    kind: Mapped[str] = mapped_column(String(8), server_default="campaign", default="campaign")
