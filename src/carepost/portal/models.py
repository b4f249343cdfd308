"""The portal's tables. No PHI: ids, hashes, blind indexes, times, counts.

The message itself is NOT stored here: `portal_messages` points at the outbox row and
attempt whose archived bytes (message_archive, sealed under the contact's data key) are
what the recipient reads, so crypto-shredding the contact shreds the portal copy too.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from carepost.db import Base, UTCDateTime


class PortalMessage(Base):
    __tablename__ = "portal_messages"

    outbox_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("outbox.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer)  # whose archived bytes are the message
    contact_id: Mapped[str] = mapped_column(String(32), ForeignKey("contacts.id"), index=True)
    sender_id: Mapped[str] = mapped_column(String(64), ForeignKey("sender_profiles.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Blind index of the address the notice went to: codes go to that address only, and
    # it is found again among the contact's addresses without storing it.
    address_bi: Mapped[str] = mapped_column(String(64))
    verification: Mapped[str] = mapped_column(String(8))  # code | dob
    reason: Mapped[str] = mapped_column(String(32))  # mx_tls_unavailable | ... | secure_delivery
    notice_message_id: Mapped[str] = mapped_column(String(254))
    notice_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    failed_tries: Mapped[int] = mapped_column(Integer, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_viewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PortalCode(Base):
    __tablename__ = "portal_codes"
    __table_args__ = (
        Index("ix_portal_codes_message", "outbox_id", "created_at"),
        Index("ix_portal_codes_network", "client_network", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    outbox_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("portal_messages.outbox_id", ondelete="CASCADE")
    )
    code_hash: Mapped[str] = mapped_column(String(64))
    client_network: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PortalWrongAnswer(Base):
    """One wrong code or date of birth: what the per-network guessing limit counts."""

    __tablename__ = "portal_wrong_answers"
    __table_args__ = (Index("ix_portal_wrong_network", "client_network", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    outbox_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("portal_messages.outbox_id", ondelete="CASCADE"), index=True
    )
    client_network: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class PortalSession(Base):
    __tablename__ = "portal_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    outbox_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("portal_messages.outbox_id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
