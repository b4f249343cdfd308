"""direct delivery: the warm-up ledger, held-back attempts, longer delivery method names

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_warmup",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("source", "day", name=op.f("pk_delivery_warmup")),
    )
    # Tries that carepost's own limits stopped before any connection: not counted
    # against the retry budget.
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("held_back", sa.Integer(), server_default="0", nullable=False)
        )
    # "tls_direct_unverified" does not fit in 16.
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.alter_column(
            "method",
            existing_type=sa.String(length=16),
            type_=sa.String(length=32),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.alter_column(
            "method",
            existing_type=sa.String(length=32),
            type_=sa.String(length=16),
            existing_nullable=False,
        )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("held_back")
    op.drop_table("delivery_warmup")
