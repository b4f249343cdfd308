"""journey engine: published journeys, enrolments, transitions, hidden send campaigns

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import carepost.db

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journey_cursors",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_journey_cursors")),
    )
    op.create_table(
        "journeys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("sender_id", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["sender_id"],
            ["sender_profiles.id"],
            name=op.f("fk_journeys_sender_id_sender_profiles"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journeys")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_journeys_name")),
    )
    with op.batch_alter_table("journeys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_journeys_name"), ["name"], unique=False)

    op.create_table(
        "journey_enrolments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("journey_id", sa.String(length=32), nullable=False),
        sa.Column("journey_name", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=True),
        sa.Column("visited", sa.Text(), nullable=False),
        sa.Column("visits", sa.Integer(), nullable=False),
        sa.Column("wake_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("waiting_for", sa.String(length=160), nullable=True),
        sa.Column("exit_reason", sa.String(length=32), nullable=True),
        sa.Column("exit_step", sa.String(length=64), nullable=True),
        sa.Column("sent", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("enrolled_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_journey_enrolments_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["journey_id"], ["journeys.id"], name=op.f("fk_journey_enrolments_journey_id_journeys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_enrolments")),
    )
    with op.batch_alter_table("journey_enrolments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_journey_enrolments_contact", ["contact_id", "journey_name"], unique=False
        )
        batch_op.create_index("ix_journey_enrolments_due", ["status", "wake_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_journey_enrolments_journey_id"), ["journey_id"], unique=False
        )
        batch_op.create_index("ix_journey_enrolments_waiting_for", ["waiting_for"], unique=False)
        batch_op.create_index(
            "uq_journey_enrolments_open",
            ["journey_name", "contact_id"],
            unique=True,
            sqlite_where=sa.text("status != 'exited'"),
            postgresql_where=sa.text("status != 'exited'"),
        )

    op.create_table(
        "journey_sends",
        sa.Column("journey_id", sa.String(length=32), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_journey_sends_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(
            ["journey_id"], ["journeys.id"], name=op.f("fk_journey_sends_journey_id_journeys")
        ),
        sa.PrimaryKeyConstraint("journey_id", "step", name=op.f("pk_journey_sends")),
    )
    op.create_table(
        "journey_messages",
        sa.Column("outbox_id", sa.String(length=32), nullable=False),
        sa.Column("enrolment_id", sa.String(length=32), nullable=False),
        sa.Column("journey_id", sa.String(length=32), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("visit", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["enrolment_id"],
            ["journey_enrolments.id"],
            name=op.f("fk_journey_messages_enrolment_id_journey_enrolments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("outbox_id", name=op.f("pk_journey_messages")),
    )
    with op.batch_alter_table("journey_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_journey_messages_enrolment_id"), ["enrolment_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_journey_messages_journey_id"), ["journey_id"], unique=False
        )

    op.create_table(
        "journey_transitions",
        sa.Column("enrolment_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=24), nullable=False),
        sa.Column("detail", sa.String(length=512), nullable=False),
        sa.Column("at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["enrolment_id"],
            ["journey_enrolments.id"],
            name=op.f("fk_journey_transitions_enrolment_id_journey_enrolments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("enrolment_id", "seq", name=op.f("pk_journey_transitions")),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=8), server_default="campaign", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("kind")

    op.drop_table("journey_transitions")
    with op.batch_alter_table("journey_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_journey_messages_journey_id"))
        batch_op.drop_index(batch_op.f("ix_journey_messages_enrolment_id"))

    op.drop_table("journey_messages")
    op.drop_table("journey_sends")
    with op.batch_alter_table("journey_enrolments", schema=None) as batch_op:
        batch_op.drop_index("uq_journey_enrolments_open")
        batch_op.drop_index("ix_journey_enrolments_waiting_for")
        batch_op.drop_index(batch_op.f("ix_journey_enrolments_journey_id"))
        batch_op.drop_index("ix_journey_enrolments_due")
        batch_op.drop_index("ix_journey_enrolments_contact")

    op.drop_table("journey_enrolments")
    with op.batch_alter_table("journeys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_journeys_name"))

    op.drop_table("journeys")
    op.drop_table("journey_cursors")
