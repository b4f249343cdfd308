"""Password rules and hashing (OWASP ASVS 5.0, chapter 6).

* argon2id at 19 MiB, t=2, p=1 (the OWASP minimum), 16-byte salt, 32-byte hash;
* 12 to 128 characters, any characters (spaces and Unicode too, NFC-normalized so the
  same password typed on two systems matches), no composition rules, no forced rotation;
* refused if its lower-case form is among the 10,000 most common passwords
  (common_passwords.txt, see PROVENANCE.md);
* for an unknown account the login still verifies a password, against a dummy hash made
  with the same parameters, so the time taken does not tell whether the account exists.
"""

from __future__ import annotations

import secrets
import unicodedata
from functools import cache
from importlib.resources import files

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 128
MEMORY_KIB = 19 * 1024
TIME_COST = 2
PARALLELISM = 1

HASHER = PasswordHasher(
    time_cost=TIME_COST,
    memory_cost=MEMORY_KIB,
    parallelism=PARALLELISM,
    hash_len=32,
    salt_len=16,
    type=Type.ID,
)


class PasswordRejected(ValueError):
    """Why a new password is not acceptable (never containing the password)."""


@cache
def common_passwords() -> frozenset[str]:
    text = files("carepost.staff").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(line for line in text.splitlines() if line)


def normalize(password: str) -> str:
    return unicodedata.normalize("NFC", password)


def check_new(password: str, *, email: str = "") -> str:
    """The normalized password if acceptable, else PasswordRejected saying which rule."""
    pw = normalize(password)
    if len(pw) < MIN_LENGTH:
        raise PasswordRejected(f"the password must have at least {MIN_LENGTH} characters")
    if len(pw) > MAX_LENGTH:
        raise PasswordRejected(f"the password may have at most {MAX_LENGTH} characters")
    lowered = pw.lower()
    if lowered in common_passwords():
        raise PasswordRejected("the password is one of the 10,000 most common passwords")
    if email and lowered == email.strip().lower():
        raise PasswordRejected("the password must not be the email address")
    return pw


def hash_password(password: str) -> str:
    return HASHER.hash(normalize(password))


@cache
def dummy_hash() -> str:
    """A hash of a random password with the live parameters, made once per process."""
    return HASHER.hash(secrets.token_urlsafe(24))


def verify(stored: str | None, password: str) -> bool:
    """Check a password against a stored hash; None (unknown user, service account)
    is checked against the dummy hash and is always False. Both paths cost one argon2id
    verification, so their timing is the same."""
    target = stored if stored is not None else dummy_hash()
    ok: bool
    try:
        ok = HASHER.verify(target, normalize(password[: MAX_LENGTH * 4]))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    return ok and stored is not None


def needs_rehash(stored: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    return HASHER.check_needs_rehash(stored)
