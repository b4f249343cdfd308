"""e2e: contacts' encryption keys (sealed) and the sender profile's end-to-end mode

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import carepost.db

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contact_encryption_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("not_after", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("added_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("dek_version", sa.Integer(), nullable=False),
        sa.Column("material", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_encryption_keys_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_encryption_keys")),
        sa.UniqueConstraint(
            "contact_id",
            "kind",
            "fingerprint",
            name=op.f("uq_contact_encryption_keys_contact_id"),
        ),
    )
    with op.batch_alter_table("contact_encryption_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_contact_encryption_keys_contact_id"), ["contact_id"], unique=False
        )
    # Existing profiles keep sending as before.
    with op.batch_alter_table("sender_profiles", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("e2e", sa.String(length=8), server_default="off", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("sender_profiles", schema=None) as batch_op:
        batch_op.drop_column("e2e")
    with op.batch_alter_table("contact_encryption_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_encryption_keys_contact_id"))
    op.drop_table("contact_encryption_keys")
