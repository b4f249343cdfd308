"""TOTP (RFC 6238) and recovery codes: the pure part (no database, no clock).

A code is accepted for the time step of `at` or one step either side (clock drift), and
only if that step is later than the last step this user ever had accepted: a code seen
on the wire, or typed twice, is refused the second time (RFC 6238 section 5.2). The
caller stores the returned step.

Recovery codes are 12 random base-32 characters (60 bits) in three groups; they are
stored as an HMAC under a key-ring subkey bound to the user id and work once.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime

import pyotp

DIGITS = 6
STEP_SECONDS = 30
WINDOW = 1  # steps accepted either side of the current one
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i


def new_secret() -> str:
    """A random base-32 secret of 160 bits (RFC 4226's recommended length)."""
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, account: str, issuer: str = "carepost") -> str:
    """The otpauth:// URI an authenticator app enrols from (shown once, as a QR code)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=account, issuer_name=issuer
    )


def code_at(secret: str, at: datetime) -> str:
    """The code for `at` (tests and enrolment checks)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).at(at)


def counter_of(at: datetime) -> int:
    return int(at.timestamp()) // STEP_SECONDS


def match(secret: str, code: str, at: datetime, last_counter: int | None) -> int | None:
    """The time step the code belongs to, or None (wrong, outside the window, or a step
    already used). Every candidate step is compared in constant time."""
    typed = "".join(code.split())
    if len(typed) != DIGITS or not typed.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    now = counter_of(at)
    found: int | None = None
    for counter in range(now - WINDOW, now + WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(counter), typed) and found is None:
            found = counter
    if found is None or (last_counter is not None and found <= last_counter):
        return None
    return found


def new_recovery_codes(n: int = RECOVERY_CODES) -> list[str]:
    return [
        "-".join("".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(4)) for _ in range(3))
        for _ in range(n)
    ]


def normalize_recovery(code: str) -> str:
    """What a typed recovery code is compared as: lower case, no spaces or dashes."""
    return "".join(c for c in code.lower() if c.isalnum())
