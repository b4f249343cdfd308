"""Saved segments, their rule versions, static lists and frozen memberships.

No PHI: names and rules typed by staff (codes, not patient data), contact ids, counts,
times. A frozen membership is evidence for a campaign: which contacts, from which rule
version, evaluated at what time, frozen when and by whom; its members are listed in
`segment_freeze_members` and summarized by a SHA-256 over the sorted ids.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from carepost.db import Base, UTCDateTime

KINDS = ("dynamic", "static")


class Segment(Base):
    __tablename__ = "segments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # dynamic | static
    description: Mapped[str] = mapped_column(Text, default="")
    current_version: Mapped[int] = mapped_column(Integer)  # 0 for static lists
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SegmentVersion(Base):
    """Every rule a dynamic segment has had; versions are never changed or deleted."""

    __tablename__ = "segment_versions"
    __table_args__ = (UniqueConstraint("segment_id", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    segment_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("segments.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    rule_text: Mapped[str] = mapped_column(Text)
    rule_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(128))


class StaticMember(Base):
    __tablename__ = "segment_static_members"

    segment_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SegmentFreeze(Base):
    """A campaign's membership, frozen at send time, kept as evidence."""

    __tablename__ = "segment_freezes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    segment_id: Mapped[str] = mapped_column(String(32), ForeignKey("segments.id"), index=True)
    segment_name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)  # rule version; 0 for a static list
    rule_text: Mapped[str] = mapped_column(Text)  # the rule as evaluated (copy, for evidence)
    campaign_id: Mapped[str] = mapped_column(String(64), index=True)
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the rule's `at`
    frozen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    frozen_by: Mapped[str] = mapped_column(String(128))
    member_count: Mapped[int] = mapped_column(Integer)
    members_sha256: Mapped[str] = mapped_column(String(64))


class FrozenMember(Base):
    """No foreign key to contacts: the evidence outlives a deleted or shredded contact."""

    __tablename__ = "segment_freeze_members"

    freeze_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("segment_freezes.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[str] = mapped_column(String(32), primary_key=True)
