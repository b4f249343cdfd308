"""bounces: inbound bounce and complaint events, the count of unlinkable ones, complaint-rate alerts

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 08:28:21.257222
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import carepost.db

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bounce_unlinked",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("received_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=24), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bounce_unlinked")),
    )
    with op.batch_alter_table("bounce_unlinked", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_bounce_unlinked_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "complaint_alerts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("scope_key", sa.String(length=253), nullable=False),
        sa.Column("raised_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivery_alert_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_complaint_alerts")),
    )
    with op.batch_alter_table("complaint_alerts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_complaint_alerts_scope", ["scope", "scope_key", "cleared_at"], unique=False
        )

    op.create_table(
        "bounce_events",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("received_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("outbox_id", sa.String(length=32), nullable=False),
        sa.Column("campaign_id", sa.String(length=32), nullable=True),
        sa.Column("sending_domain", sa.String(length=253), nullable=False),
        sa.Column("linked_by", sa.String(length=12), nullable=False),
        sa.Column("category", sa.String(length=12), nullable=False),
        sa.Column("feedback_type", sa.String(length=32), nullable=True),
        sa.Column("recipients", sa.String(length=256), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("note", sa.String(length=64), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["outbox.id"],
            name=op.f("fk_bounce_events_outbox_id_outbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bounce_events")),
        sa.UniqueConstraint("sha256", "outbox_id", name="uq_bounce_events_message"),
    )
    with op.batch_alter_table("bounce_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_bounce_events_campaign", ["campaign_id", "category"], unique=False
        )
        batch_op.create_index(
            "ix_bounce_events_domain", ["sending_domain", "received_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_bounce_events_outbox_id"), ["outbox_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bounce_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bounce_events_outbox_id"))
        batch_op.drop_index("ix_bounce_events_domain")
        batch_op.drop_index("ix_bounce_events_campaign")

    op.drop_table("bounce_events")
    with op.batch_alter_table("complaint_alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_complaint_alerts_scope")

    op.drop_table("complaint_alerts")
    with op.batch_alter_table("bounce_unlinked", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bounce_unlinked_received_at"))

    op.drop_table("bounce_unlinked")
