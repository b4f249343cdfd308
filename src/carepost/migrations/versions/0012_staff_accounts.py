"""staff accounts: users, roles, MFA, sessions, API keys, break-glass, login throttle

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24 11:21:21.704528
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import carepost.db

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "staff_login_throttle",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_staff_login_throttle")),
    )
    op.create_table(
        "staff_roles",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=256), nullable=False),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_staff_roles")),
    )
    op.create_table(
        "staff_users",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=True),
        sa.Column("password_changed_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_users")),
        sa.UniqueConstraint("email", name=op.f("uq_staff_users_email")),
    )
    op.create_table(
        "staff_alerts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("ref", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=128), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["staff_users.id"], name=op.f("fk_staff_alerts_user_id_staff_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_alerts")),
    )
    with op.batch_alter_table("staff_alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staff_alerts_kind"), ["kind"], unique=False)

    op.create_table(
        "staff_api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("expires_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_network", sa.String(length=48), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["staff_users.id"],
            name=op.f("fk_staff_api_keys_user_id_staff_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_api_keys")),
    )
    with op.batch_alter_table("staff_api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staff_api_keys_user_id"), ["user_id"], unique=False)

    op.create_table(
        "staff_break_glass",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("granted_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["staff_users.id"], name=op.f("fk_staff_break_glass_user_id_staff_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_break_glass")),
    )
    with op.batch_alter_table("staff_break_glass", schema=None) as batch_op:
        batch_op.create_index(
            "ix_staff_break_glass_user_id_expires_at", ["user_id", "expires_at"], unique=False
        )

    op.create_table(
        "staff_mfa",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("kek_version", sa.Integer(), nullable=False),
        sa.Column("last_counter", sa.Integer(), nullable=True),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["staff_users.id"],
            name=op.f("fk_staff_mfa_user_id_staff_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_staff_mfa")),
    )
    op.create_table(
        "staff_recovery_codes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["staff_users.id"],
            name=op.f("fk_staff_recovery_codes_user_id_staff_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_recovery_codes")),
    )
    with op.batch_alter_table("staff_recovery_codes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_staff_recovery_codes_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "staff_role_permissions",
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("permission", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["role"],
            ["staff_roles.name"],
            name=op.f("fk_staff_role_permissions_role_staff_roles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("role", "permission", name=op.f("pk_staff_role_permissions")),
    )
    op.create_table(
        "staff_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=8), nullable=False),
        sa.Column("created_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", carepost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", carepost.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("network", sa.String(length=48), nullable=False),
        sa.Column("mfa_failures", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["staff_users.id"],
            name=op.f("fk_staff_sessions_user_id_staff_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_sessions")),
    )
    with op.batch_alter_table("staff_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staff_sessions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "staff_user_roles",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["staff_users.id"],
            name=op.f("fk_staff_user_roles_user_id_staff_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "role", name=op.f("pk_staff_user_roles")),
    )


def downgrade() -> None:

    op.drop_table("staff_user_roles")
    with op.batch_alter_table("staff_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_staff_sessions_user_id"))

    op.drop_table("staff_sessions")
    op.drop_table("staff_role_permissions")
    with op.batch_alter_table("staff_recovery_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_staff_recovery_codes_user_id"))

    op.drop_table("staff_recovery_codes")
    op.drop_table("staff_mfa")
    with op.batch_alter_table("staff_break_glass", schema=None) as batch_op:
        batch_op.drop_index("ix_staff_break_glass_user_id_expires_at")

    op.drop_table("staff_break_glass")
    with op.batch_alter_table("staff_api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_staff_api_keys_user_id"))

    op.drop_table("staff_api_keys")
    with op.batch_alter_table("staff_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_staff_alerts_kind"))

    op.drop_table("staff_alerts")
    op.drop_table("staff_users")
    op.drop_table("staff_roles")
    op.drop_table("staff_login_throttle")
