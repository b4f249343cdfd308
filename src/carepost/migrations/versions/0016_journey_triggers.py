"""journey triggers: contact time zones, webhook attempts, segment membership and
date-occurrence records of scan triggers

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import carepost.db

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))
    with op.batch_alter_table("journey_enrolments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("call_attempts", sa.Integer(), server_default="0", nullable=False)
        )
    op.create_table(
        "journey_scans",
        sa.Column("journey_name", sa.String(length=64), nullable=False),
        sa.Column("scanned_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("journey_name", name=op.f("pk_journey_scans")),
    )
    op.create_table(
        "journey_segment_members",
        sa.Column("journey_name", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_journey_segment_members_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "journey_name", "contact_id", name=op.f("pk_journey_segment_members")
        ),
    )
    op.create_table(
        "journey_occurrences",
        sa.Column("journey_name", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.Column("occurrence", sa.String(length=10), nullable=False),
        sa.Column("at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_journey_occurrences_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "journey_name", "contact_id", "occurrence", name=op.f("pk_journey_occurrences")
        ),
    )


def downgrade() -> None:
    op.drop_table("journey_occurrences")
    op.drop_table("journey_segment_members")
    op.drop_table("journey_scans")
    with op.batch_alter_table("journey_enrolments", schema=None) as batch_op:
        batch_op.drop_column("call_attempts")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_column("time_zone")
