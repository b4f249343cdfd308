"""Engagement events: opens, clicks, form submissions and events received over the API,
with the tracking classifier's verdict. No PHI: ids, kinds, names of forms/events chosen
by staff, verdicts and times. `id` only grows, so readers (the segment snapshot) use it
as a change cursor."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from carepost.db import Base, UTCDateTime

EVENT_KINDS = ("open", "click", "form_submitted", "api_event")
VERDICTS = ("human", "machine", "unknown")


class EngagementEvent(Base):
    __tablename__ = "engagement_events"
    __table_args__ = (
        Index("ix_engagement_events_contact_id_at", "contact_id", "at"),
        Index("ix_engagement_events_campaign_id_at", "campaign_id", "at"),
        Index("ix_engagement_events_message_id", "message_id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    contact_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("contacts.id", ondelete="CASCADE")
    )
    message_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    verdict: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Opens and clicks from the tracking endpoints (null for form and API events):
    campaign_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    link_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The source as a network (/24 or /48), never the raw address.
    network: Mapped[str | None] = mapped_column(String(48), nullable=True)
