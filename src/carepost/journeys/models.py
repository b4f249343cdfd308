"""Journeys in the database: published versions, enrolments (with their durable timers),
the transitions each enrolment took, the hidden campaign behind each send step, the
message each send wrote, and the engagement cursor the engine reads events from.

No PHI: ids, step ids chosen by staff, states, times. Event properties are never stored.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from carepost.db import Base, UTCDateTime


class JourneyVersion(Base):
    """One published version of a journey. New enrolments take the newest active version
    of a name; running ones finish on the version they started on."""

    __tablename__ = "journeys"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[str] = mapped_column(Text)  # the checked document, as JSON
    status: Mapped[str] = mapped_column(String(8))  # active | paused
    sender_id: Mapped[str] = mapped_column(String(64), ForeignKey("sender_profiles.id"))
    topic: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))


class JourneySend(Base):
    """The hidden campaign (kind 'journey') through which a send step's messages go: the
    worker composes, gates and delivers them as it does any campaign's."""

    __tablename__ = "journey_sends"

    journey_id: Mapped[str] = mapped_column(String(32), ForeignKey("journeys.id"), primary_key=True)
    step: Mapped[str] = mapped_column(String(64), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(32), ForeignKey("campaigns.id"))


class JourneyEnrolment(Base):
    __tablename__ = "journey_enrolments"
    __table_args__ = (
        Index("ix_journey_enrolments_due", "status", "wake_at"),
        Index("ix_journey_enrolments_waiting_for", "waiting_for"),
        Index("ix_journey_enrolments_contact", "contact_id", "journey_name"),
        # At most one unfinished enrolment per contact and journey (any version): two
        # copies of the same event arriving together enrol the contact once.
        Index(
            "uq_journey_enrolments_open",
            "journey_name",
            "contact_id",
            unique=True,
            sqlite_where=text("status != 'exited'"),
            postgresql_where=text("status != 'exited'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    journey_id: Mapped[str] = mapped_column(String(32), ForeignKey("journeys.id"), index=True)
    # The name too, so re-entry and event matching need no join.
    journey_name: Mapped[str] = mapped_column(String(64))
    contact_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("contacts.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(String(8))  # active | waiting | calling | exited
    step: Mapped[str | None] = mapped_column(String(64), nullable=True)
    visited: Mapped[str] = mapped_column(Text)  # JSON list of step ids
    visits: Mapped[int] = mapped_column(Integer)
    wake_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    waiting_for: Mapped[str | None] = mapped_column(String(160), nullable=True)
    exit_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    exit_step: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sent: Mapped[str] = mapped_column(Text)  # JSON list of [send step, visit]
    seq: Mapped[int] = mapped_column(Integer)  # transitions written so far
    # A webhook call in progress (status 'calling'): made between two transactions, so
    # the engine that claimed it holds a lease (journeys/engine.py call_webhooks).
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Failed attempts of the webhook step the enrolment is calling (status 'calling').
    call_attempts: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JourneyTransition(Base):
    __tablename__ = "journey_transitions"

    enrolment_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("journey_enrolments.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(24))
    detail: Mapped[str] = mapped_column(String(512))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class JourneyMessage(Base):
    """The outbox row a send step's visit wrote: engagement with that message is this
    enrolment's (waits on opened/clicked and branch predicates read it)."""

    __tablename__ = "journey_messages"

    outbox_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    enrolment_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("journey_enrolments.id", ondelete="CASCADE"), index=True
    )
    journey_id: Mapped[str] = mapped_column(String(32), index=True)
    step: Mapped[str] = mapped_column(String(64))
    visit: Mapped[int] = mapped_column(Integer)


class JourneyCursor(Base):
    """How far the engine has read an append-only table (engagement_events by id)."""

    __tablename__ = "journey_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)


class JourneyScan(Base):
    """A scan-triggered journey (segment) whose baseline was taken: membership before it
    is not an entry."""

    __tablename__ = "journey_scans"

    journey_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    scanned_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JourneySegmentMember(Base):
    """The members of a segment-triggered journey's segment at its last scan: the next
    scan's difference is who entered and who left."""

    __tablename__ = "journey_segment_members"

    journey_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    contact_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )


class JourneyOccurrence(Base):
    """A date trigger fired for a contact on this occurrence (the local date of the
    birthday, visit or appointment plus the offset): once per occurrence, ever."""

    __tablename__ = "journey_occurrences"

    journey_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    contact_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    occurrence: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD
    at: Mapped[datetime] = mapped_column(UTCDateTime)
