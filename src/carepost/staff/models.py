"""Staff accounts' tables. Staff email addresses and names are not PHI; still, nothing
secret is stored in a form that can be used: passwords as argon2id hashes, TOTP secrets
sealed under the key ring's KEK, recovery codes, session tokens and API key secrets as
keyed or plain hashes, throttle keys as HMACs of the tried address."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from carepost.db import Base, UTCDateTime


class StaffUser(Base):
    __tablename__ = "staff_users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # normalized (lower case)
    display_name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(8))  # person | service (API keys only)
    status: Mapped[str] = mapped_column(String(8))  # active | disabled
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StaffRole(Base):
    """A custom role. The built-in roles live in code (staff/permissions.py), so a new
    release's change to them applies without a data migration; their names are reserved."""

    __tablename__ = "staff_roles"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(128))


class StaffRolePermission(Base):
    __tablename__ = "staff_role_permissions"

    role: Mapped[str] = mapped_column(
        String(64), ForeignKey("staff_roles.name", ondelete="CASCADE"), primary_key=True
    )
    permission: Mapped[str] = mapped_column(String(64), primary_key=True)


class StaffUserRole(Base):
    __tablename__ = "staff_user_roles"

    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("staff_users.id", ondelete="CASCADE"), primary_key=True
    )
    # A built-in role's name or a custom role's (no foreign key: built-ins are in code).
    role: Mapped[str] = mapped_column(String(64), primary_key=True)


class StaffMfa(Base):
    """A user's TOTP secret, sealed (AES-256-GCM under a KEK version, AAD naming the row),
    and the last time step used, so a code is never accepted twice."""

    __tablename__ = "staff_mfa"

    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("staff_users.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    kek_version: Mapped[int] = mapped_column(Integer)
    last_counter: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StaffRecoveryCode(Base):
    __tablename__ = "staff_recovery_codes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("staff_users.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64))  # HMAC-SHA256 (key ring subkey), hex
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StaffSession(Base):
    """A browser session or a login waiting for its second factor (stage "mfa"). The id
    is the SHA-256 of the 128-bit token in the cookie; the token itself is never stored."""

    __tablename__ = "staff_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("staff_users.id", ondelete="CASCADE"), index=True
    )
    stage: Mapped[str] = mapped_column(String(8))  # mfa | active
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)  # absolute limit
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    network: Mapped[str] = mapped_column(String(48))
    mfa_failures: Mapped[int] = mapped_column(Integer, default=0)


class StaffApiKey(Base):
    """An API key: the id is also the key's visible prefix (lookup without scanning), the
    secret part is stored as SHA-256 (it has 256 bits of entropy, so no slow hash is
    needed). Scopes are space-separated permissions."""

    __tablename__ = "staff_api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("staff_users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(128))
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_network: Mapped[str | None] = mapped_column(String(48), nullable=True)


class StaffBreakGlass(Base):
    __tablename__ = "staff_break_glass"
    __table_args__ = (Index("ix_staff_break_glass_user_id_expires_at", "user_id", "expires_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), ForeignKey("staff_users.id"))
    reason: Mapped[str] = mapped_column(Text)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StaffAlert(Base):
    """Something compliance must look at (kind "break_glass": a grant, named by ref)."""

    __tablename__ = "staff_alerts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    ref: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(32), ForeignKey("staff_users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


class StaffLoginThrottle(Base):
    """Failure counts per scope: `a:<HMAC of the address>`, `n:<client network>` and
    `an:<HMAC>|<network>` (staff/throttle.py decides from them)."""

    __tablename__ = "staff_login_throttle"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime)
