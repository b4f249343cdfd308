"""portal: messages kept for secure pickup (pointing at their archived attempt), one-time
codes (hashes), wrong answers, sessions; the sender profile's TLS fallback and portal
verification

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 08:29:53.033217
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import carepost.db

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_messages",
        sa.Column("outbox_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.Column("sender_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("address_bi", sa.String(length=64), nullable=False),
        sa.Column("verification", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("notice_message_id", sa.String(length=254), nullable=False),
        sa.Column("notice_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("failed_tries", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("first_viewed_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_portal_messages_contact_id_contacts")
        ),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["outbox.id"],
            name=op.f("fk_portal_messages_outbox_id_outbox"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sender_id"],
            ["sender_profiles.id"],
            name=op.f("fk_portal_messages_sender_id_sender_profiles"),
        ),
        sa.PrimaryKeyConstraint("outbox_id", name=op.f("pk_portal_messages")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_portal_messages_token_hash")),
    )
    with op.batch_alter_table("portal_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_portal_messages_contact_id"), ["contact_id"], unique=False
        )

    op.create_table(
        "portal_codes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("outbox_id", sa.String(length=32), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_network", sa.String(length=64), nullable=False),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["portal_messages.outbox_id"],
            name=op.f("fk_portal_codes_outbox_id_portal_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_codes")),
    )
    with op.batch_alter_table("portal_codes", schema=None) as batch_op:
        batch_op.create_index("ix_portal_codes_message", ["outbox_id", "created_at"], unique=False)
        batch_op.create_index(
            "ix_portal_codes_network", ["client_network", "created_at"], unique=False
        )

    op.create_table(
        "portal_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("outbox_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["portal_messages.outbox_id"],
            name=op.f("fk_portal_sessions_outbox_id_portal_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_portal_sessions")),
    )
    with op.batch_alter_table("portal_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_portal_sessions_outbox_id"), ["outbox_id"], unique=False
        )

    op.create_table(
        "portal_wrong_answers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("outbox_id", sa.String(length=32), nullable=False),
        sa.Column("client_network", sa.String(length=64), nullable=False),
        sa.Column("at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["portal_messages.outbox_id"],
            name=op.f("fk_portal_wrong_answers_outbox_id_portal_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_wrong_answers")),
    )
    with op.batch_alter_table("portal_wrong_answers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_portal_wrong_answers_outbox_id"), ["outbox_id"], unique=False
        )
        batch_op.create_index("ix_portal_wrong_network", ["client_network", "at"], unique=False)

    # Existing profiles get the secure defaults: portal fallback, code verification.
    with op.batch_alter_table("sender_profiles", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tls_fallback", sa.String(length=8), server_default="portal", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "portal_verification", sa.String(length=8), server_default="code", nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("sender_profiles", schema=None) as batch_op:
        batch_op.drop_column("portal_verification")
        batch_op.drop_column("tls_fallback")

    with op.batch_alter_table("portal_wrong_answers", schema=None) as batch_op:
        batch_op.drop_index("ix_portal_wrong_network")
        batch_op.drop_index(batch_op.f("ix_portal_wrong_answers_outbox_id"))

    op.drop_table("portal_wrong_answers")
    with op.batch_alter_table("portal_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_portal_sessions_outbox_id"))

    op.drop_table("portal_sessions")
    with op.batch_alter_table("portal_codes", schema=None) as batch_op:
        batch_op.drop_index("ix_portal_codes_network")
        batch_op.drop_index("ix_portal_codes_message")

    op.drop_table("portal_codes")
    with op.batch_alter_table("portal_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_portal_messages_contact_id"))

    op.drop_table("portal_messages")
