"""TOTP secrets and recovery codes in the database: enrol, check a code (storing its
time step so it is never accepted again), spend a recovery code. The secret is sealed
(AES-256-GCM) under the key ring's primary KEK with associated data naming the row, so a
database dump alone cannot produce codes. Services never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from carepost.contacts.store import new_id
from carepost.crypto.envelope import aad, open_sealed, seal
from carepost.crypto.keyring import KeyRing
from carepost.staff import totp
from carepost.staff.models import StaffMfa, StaffRecoveryCode

RECOVERY_PURPOSE = "carepost staff recovery code v1"


@dataclass(frozen=True)
class Enrolment:
    """Shown once to the person enrolling, then gone: nothing here is stored as is."""

    secret: str
    uri: str
    recovery_codes: list[str]


def _aad(user_id: str, version: int) -> bytes:
    return aad("staff_mfa", "secret", user_id, version)


def recovery_hash(ring: KeyRing, user_id: str, code: str) -> str:
    return ring.hmac_hex(RECOVERY_PURPOSE, f"{user_id}|{totp.normalize_recovery(code)}".encode())


def enrol(session: Session, ring: KeyRing, user_id: str, account: str, at: datetime) -> Enrolment:
    """A new secret and new recovery codes for the user, replacing any old ones."""
    secret = totp.new_secret()
    version = ring.primary_version
    sealed = seal(ring.kek(version), secret.encode("ascii"), _aad(user_id, version))
    row = session.get(StaffMfa, user_id)
    if row is None:
        session.add(StaffMfa(user_id=user_id, secret=sealed, kek_version=version, created_at=at))
    else:
        row.secret, row.kek_version, row.created_at = sealed, version, at
        row.last_counter, row.confirmed_at = None, None
    session.execute(delete(StaffRecoveryCode).where(StaffRecoveryCode.user_id == user_id))
    codes = totp.new_recovery_codes()
    for code in codes:
        session.add(
            StaffRecoveryCode(
                id=new_id(),
                user_id=user_id,
                code_hash=recovery_hash(ring, user_id, code),
                created_at=at,
            )
        )
    session.flush()
    return Enrolment(secret, totp.provisioning_uri(secret, account), codes)


def secret_of(ring: KeyRing, row: StaffMfa) -> str:
    return open_sealed(
        ring.kek(row.kek_version), bytes(row.secret), _aad(row.user_id, row.kek_version)
    ).decode("ascii")


def check_code(session: Session, ring: KeyRing, user_id: str, code: str, at: datetime) -> bool:
    """True if the code is right for `at` (±1 step) and its step was never used; the
    step is then recorded. The row is locked so two racing requests cannot both use it."""
    row = session.scalar(select(StaffMfa).where(StaffMfa.user_id == user_id).with_for_update())
    if row is None:
        return False
    counter = totp.match(secret_of(ring, row), code, at, row.last_counter)
    if counter is None:
        return False
    row.last_counter = counter
    if row.confirmed_at is None:
        row.confirmed_at = at
    session.flush()
    return True


def use_recovery_code(
    session: Session, ring: KeyRing, user_id: str, code: str, at: datetime
) -> bool:
    """Spend one recovery code: True the first time, False ever after (a conditional
    update, so two racing uses cannot both succeed)."""
    digest = recovery_hash(ring, user_id, code)
    result = session.execute(
        update(StaffRecoveryCode)
        .where(
            StaffRecoveryCode.user_id == user_id,
            StaffRecoveryCode.code_hash == digest,
            StaffRecoveryCode.used_at.is_(None),
        )
        .values(used_at=at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def recovery_codes_left(session: Session, user_id: str) -> int:
    return len(
        list(
            session.scalars(
                select(StaffRecoveryCode.id).where(
                    StaffRecoveryCode.user_id == user_id, StaffRecoveryCode.used_at.is_(None)
                )
            )
        )
    )
