"""segments: saved segments, rule versions, static lists, frozen memberships; engagement
events; change-cursor indexes on contacts.updated_at and clinical_facts.updated_at

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import carepost.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contacts_updated_at"), ["updated_at"], unique=False)
    with op.batch_alter_table("clinical_facts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_clinical_facts_updated_at"), ["updated_at"], unique=False
        )

    op.create_table(
        "engagement_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=True),
        sa.Column("verdict", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_engagement_events_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engagement_events")),
    )
    with op.batch_alter_table("engagement_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_engagement_events_contact_id_at", ["contact_id", "at"], unique=False
        )

    op.create_table(
        "segments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("name", name=op.f("uq_segments_name")),
    )
    op.create_table(
        "segment_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("segment_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rule_text", sa.Text(), nullable=False),
        sa.Column("rule_json", sa.Text(), nullable=False),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_versions_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_versions")),
        sa.UniqueConstraint("segment_id", "version", name=op.f("uq_segment_versions_segment_id")),
    )
    with op.batch_alter_table("segment_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_segment_versions_segment_id"), ["segment_id"], unique=False
        )

    op.create_table(
        "segment_static_members",
        sa.Column("segment_id", sa.String(length=32), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.Column("added_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_segment_static_members_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_static_members_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("segment_id", "contact_id", name=op.f("pk_segment_static_members")),
    )
    with op.batch_alter_table("segment_static_members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_segment_static_members_contact_id"), ["contact_id"], unique=False
        )

    op.create_table(
        "segment_freezes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("segment_id", sa.String(length=32), nullable=False),
        sa.Column("segment_name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rule_text", sa.Text(), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("evaluated_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("frozen_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("frozen_by", sa.String(length=128), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("members_sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_freezes_segment_id_segments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_freezes")),
    )
    with op.batch_alter_table("segment_freezes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_segment_freezes_campaign_id"), ["campaign_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_segment_freezes_segment_id"), ["segment_id"], unique=False
        )

    op.create_table(
        "segment_freeze_members",
        sa.Column("freeze_id", sa.String(length=32), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["freeze_id"],
            ["segment_freezes.id"],
            name=op.f("fk_segment_freeze_members_freeze_id_segment_freezes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("freeze_id", "contact_id", name=op.f("pk_segment_freeze_members")),
    )


def downgrade() -> None:
    op.drop_table("segment_freeze_members")
    with op.batch_alter_table("segment_freezes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_segment_freezes_segment_id"))
        batch_op.drop_index(batch_op.f("ix_segment_freezes_campaign_id"))
    op.drop_table("segment_freezes")
    with op.batch_alter_table("segment_static_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_segment_static_members_contact_id"))
    op.drop_table("segment_static_members")
    with op.batch_alter_table("segment_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_segment_versions_segment_id"))
    op.drop_table("segment_versions")
    op.drop_table("segments")
    with op.batch_alter_table("engagement_events", schema=None) as batch_op:
        batch_op.drop_index("ix_engagement_events_contact_id_at")
    op.drop_table("engagement_events")
    with op.batch_alter_table("clinical_facts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clinical_facts_updated_at"))
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_updated_at"))
