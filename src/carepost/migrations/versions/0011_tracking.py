"""tracking: engagement events carry campaign, link, confidence and source network;
attempts record the recipient's domain; account-wide settings

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import carepost.db

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("updated_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_account_settings")),
    )
    with op.batch_alter_table("engagement_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("campaign_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("link_index", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("confidence", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("network", sa.String(length=48), nullable=True))
        batch_op.create_index(
            "ix_engagement_events_campaign_id_at", ["campaign_id", "at"], unique=False
        )
        batch_op.create_index("ix_engagement_events_message_id", ["message_id"], unique=False)
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipient_domain", sa.String(length=253), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_column("recipient_domain")
    with op.batch_alter_table("engagement_events", schema=None) as batch_op:
        batch_op.drop_index("ix_engagement_events_message_id")
        batch_op.drop_index("ix_engagement_events_campaign_id_at")
        batch_op.drop_column("network")
        batch_op.drop_column("confidence")
        batch_op.drop_column("link_index")
        batch_op.drop_column("campaign_id")
    op.drop_table("account_settings")
