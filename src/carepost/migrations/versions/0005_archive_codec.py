"""delivery: the archive records how each sealed body was packed (raw, or compressed: zstd)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 05:13:09.106387
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows archived before this revision were sealed as they were sent: "raw".
    with op.batch_alter_table("message_archive", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("codec", sa.String(length=8), server_default="raw", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("message_archive", schema=None) as batch_op:
        batch_op.drop_column("codec")
