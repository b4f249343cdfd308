"""foundation: contacts, keys, lookups, facts, imports, audit

Revision ID: 0001
Revises:
Create Date: 2026-11-23 19:08:09.393058
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import carepost.db

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    # The chain starts empty: head seq 0 and the all-zero genesis hash. Appenders lock
    # this row, which is what serializes them on PostgreSQL.
    op.bulk_insert(
        sa.table(
            "audit_head",
            sa.column("id", sa.Integer()),
            sa.column("seq", sa.Integer()),
            sa.column("hash", sa.LargeBinary()),
        ),
        [{"id": 1, "seq": 0, "hash": bytes(32)}],
    )
    op.create_table(
        "audit_log",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("at", sa.String(length=27), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subjects", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("source_kind", sa.String(length=16), nullable=False),
        sa.Column("source_address", sa.String(length=128), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_action"), ["action"], unique=False)

    op.create_table(
        "contacts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("phi", sa.LargeBinary(), nullable=False),
        sa.Column("phi_fingerprint", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contacts_created_at"), ["created_at"], unique=False)

    op.create_table(
        "import_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("started_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("summary", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_runs")),
    )
    op.create_table(
        "clinical_facts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source_bi", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("fingerprint", sa.String(length=32), nullable=False),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_clinical_facts_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinical_facts")),
        sa.UniqueConstraint("contact_id", "source_bi", name=op.f("uq_clinical_facts_contact_id")),
    )
    with op.batch_alter_table("clinical_facts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_clinical_facts_contact_id"), ["contact_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_clinical_facts_kind"), ["kind"], unique=False)

    op.create_table(
        "contact_keys",
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.Column("dek_version", sa.Integer(), nullable=False),
        sa.Column("kek_version", sa.Integer(), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_keys_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_contact_keys")),
    )
    with op.batch_alter_table("contact_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_contact_keys_kek_version"), ["kek_version"], unique=False
        )

    op.create_table(
        "contact_lookups",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value_bi", sa.String(length=32), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_lookups_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("kind", "value_bi", "contact_id", name=op.f("pk_contact_lookups")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("contact_lookups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_contact_lookups_contact_id"), ["contact_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("contact_lookups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_lookups_contact_id"))

    op.drop_table("contact_lookups")
    with op.batch_alter_table("contact_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_keys_kek_version"))

    op.drop_table("contact_keys")
    with op.batch_alter_table("clinical_facts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clinical_facts_kind"))
        batch_op.drop_index(batch_op.f("ix_clinical_facts_contact_id"))

    op.drop_table("clinical_facts")
    op.drop_table("import_runs")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_created_at"))

    op.drop_table("contacts")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_action"))

    op.drop_table("audit_log")
    op.drop_table("audit_head")
