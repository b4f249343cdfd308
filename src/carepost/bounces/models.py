"""What inbound bounces and complaints leave behind. Nothing here is PHI: ids, codes,
times, a domain of ours and a SHA-256 of the raw message (never the message, never an
address: a recipient is matched by blind index and only the outcome is kept)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from carepost.db import Base, UTCDateTime


class BounceEvent(Base):
    """One bounce, delay notice, auto-reply or complaint linked to the message it is about."""

    __tablename__ = "bounce_events"
    __table_args__ = (
        # The same report delivered twice (a retrying MTA, a second MX) is one event.
        UniqueConstraint("sha256", "outbox_id", name="uq_bounce_events_message"),
        Index("ix_bounce_events_campaign", "campaign_id", "category"),
        Index("ix_bounce_events_domain", "sending_domain", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    outbox_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("outbox.id", ondelete="CASCADE"), index=True
    )
    campaign_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sending_domain: Mapped[str] = mapped_column(String(253))
    linked_by: Mapped[str] = mapped_column(String(12))  # verp | message_id
    category: Mapped[str] = mapped_column(String(12))
    feedback_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Per recipient "status:hard|soft|-" (e.g. "5.1.1:hard 4.2.2:soft"), no addresses.
    recipients: Mapped[str] = mapped_column(String(256))
    # What carepost did: suppressed, suppressed_opted_out, recorded, and why not more.
    action: Mapped[str] = mapped_column(String(24))
    note: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))


class BounceUnlinked(Base):
    """A message the listener accepted but could not tie to a message of ours (or whose
    VERP tag was forged): counted, its content dropped."""

    __tablename__ = "bounce_unlinked"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    reason: Mapped[str] = mapped_column(String(24))  # no_reference | forged_verp | unreadable
    sha256: Mapped[str] = mapped_column(String(64))


class ComplaintAlert(Base):
    """A complaint rate above the limit for a campaign or a sending domain. Open while
    `cleared_at` is empty, so a scope raises once per crossing, not once per complaint."""

    __tablename__ = "complaint_alerts"
    __table_args__ = (Index("ix_complaint_alerts_scope", "scope", "scope_key", "cleared_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))  # campaign | domain
    scope_key: Mapped[str] = mapped_column(String(253))
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivery_alert_id: Mapped[str] = mapped_column(String(32))
