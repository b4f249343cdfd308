"""consent: consents, authorizations, suppressions, gate runs and decisions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 02:56:35.290624
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import carepost.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gate_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("message_class", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("decided_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("allowed", sa.Integer(), nullable=False),
        sa.Column("denied", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_runs")),
    )
    with op.batch_alter_table("gate_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gate_runs_campaign_id"), ["campaign_id"], unique=False)

    op.create_table(
        "suppressions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("address_bi", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("evidence_ref", sa.String(length=256), nullable=False),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("removed_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("removed_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
    )
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.create_index("ix_suppressions_address", ["channel", "address_bi"], unique=False)

    op.create_table(
        "authorizations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.Column("purposes", sa.String(length=256), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.Column("signed_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("signature_method", sa.String(length=32), nullable=False),
        sa.Column("signed_text_sha256", sa.String(length=64), nullable=False),
        sa.Column("signed_by_representative", sa.Boolean(), nullable=False),
        sa.Column("remuneration_statement", sa.Boolean(), nullable=False),
        sa.Column("expires_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("has_expiry_event", sa.Boolean(), nullable=False),
        sa.Column("expiry_event_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revocation_source", sa.String(length=20), nullable=True),
        sa.Column("revocation_evidence_ref", sa.String(length=256), nullable=True),
        sa.Column("recorded_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("dek_version", sa.Integer(), nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_authorizations_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_authorizations")),
    )
    with op.batch_alter_table("authorizations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_authorizations_contact_id"), ["contact_id"], unique=False
        )

    op.create_table(
        "consents",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("evidence_ref", sa.String(length=256), nullable=False),
        sa.Column("effective_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_consents_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index(
            "ix_consents_contact_channel_topic", ["contact_id", "channel", "topic"], unique=False
        )

    op.create_table(
        "gate_decisions",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.String(length=512), nullable=False),
        sa.Column("authorization_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["gate_runs.id"],
            name=op.f("fk_gate_decisions_run_id_gate_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "contact_id", name=op.f("pk_gate_decisions")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("gate_decisions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_gate_decisions_campaign_contact", ["campaign_id", "contact_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("gate_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_gate_decisions_campaign_contact")

    op.drop_table("gate_decisions")
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_index("ix_consents_contact_channel_topic")

    op.drop_table("consents")
    with op.batch_alter_table("authorizations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_authorizations_contact_id"))

    op.drop_table("authorizations")
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.drop_index("ix_suppressions_address")

    op.drop_table("suppressions")
    with op.batch_alter_table("gate_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gate_runs_campaign_id"))

    op.drop_table("gate_runs")
