"""Password rules and hashing (staff/passwords.py), and the shipped common-password list."""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files

import pytest

from carepost.staff import passwords
from carepost.staff.passwords import PasswordRejected


def test_length_limits() -> None:
    with pytest.raises(PasswordRejected, match="at least 12"):
        passwords.check_new("a" * 11 + "")
    assert passwords.check_new("tulip-anvil-9") == "tulip-anvil-9"
    assert passwords.check_new("x" * 128)
    with pytest.raises(PasswordRejected, match="at most 128"):
        passwords.check_new("x" * 129)


def test_any_characters_are_allowed_and_normalized() -> None:
    decomposed = "cafe\u0301 au lait, merci"  # e + combining acute
    composed = "caf\u00e9 au lait, merci"
    assert passwords.check_new(decomposed) == composed
    stored = passwords.hash_password(decomposed)
    assert passwords.verify(stored, composed)


def test_common_passwords_are_refused_whatever_their_case() -> None:
    for common in ("1qaz2wsx3edc", "QWERTY123456", "LeaveMeAlone"):
        with pytest.raises(PasswordRejected, match="10,000 most common"):
            passwords.check_new(common)


def test_the_email_address_is_refused() -> None:
    with pytest.raises(PasswordRejected, match="email"):
        passwords.check_new("Boss@Clinic.example", email="boss@clinic.example")


def test_the_list_is_the_recorded_one() -> None:
    """The file is exactly what PROVENANCE.md says tools/make_common_passwords.py made."""
    staff = files("carepost.staff")
    data = staff.joinpath("common_passwords.txt").read_bytes()
    provenance = staff.joinpath("PROVENANCE.md").read_text("utf-8")
    recorded = re.search(r"`([0-9a-f]{64})`", provenance)
    assert recorded is not None
    assert hashlib.sha256(data).hexdigest() == recorded.group(1)
    lines = data.decode("utf-8").splitlines()
    assert len(lines) == len(set(lines)) == 10_000
    assert lines[:3] == ["123456", "password", "12345678"]
    assert len(passwords.common_passwords()) == 10_000


def test_argon2id_parameters_meet_the_owasp_minimum() -> None:
    stored = passwords.hash_password("tulip-anvil-9 lantern")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify(stored, "tulip-anvil-9 lantern")
    assert not passwords.verify(stored, "tulip-anvil-9 lanterN")
    assert not passwords.needs_rehash(stored)


def test_no_account_never_verifies() -> None:
    """Unknown users are checked against the dummy hash and always fail."""
    assert passwords.dummy_hash().startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert not passwords.verify(None, "anything at all here")


def test_weaker_hashes_are_flagged_for_rehash() -> None:
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("old password 1")
    assert passwords.verify(weak, "old password 1")
    assert passwords.needs_rehash(weak)
