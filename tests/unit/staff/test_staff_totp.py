"""TOTP and recovery codes, the pure part (staff/totp.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

from carepost.staff import totp

AT = datetime(2026, 11, 24, 9, 0, 10, tzinfo=UTC)
STEP = timedelta(seconds=totp.STEP_SECONDS)


def test_a_code_is_accepted_for_its_step_and_one_step_either_side() -> None:
    secret = totp.new_secret()
    now = totp.counter_of(AT)
    for offset in (-1, 0, 1):
        code = totp.code_at(secret, AT + offset * STEP)
        assert totp.match(secret, code, AT, None) == now + offset
    for offset in (-3, -2, 2, 3):
        assert totp.match(secret, totp.code_at(secret, AT + offset * STEP), AT, None) is None


def test_a_used_step_and_every_earlier_one_is_refused() -> None:
    secret = totp.new_secret()
    code = totp.code_at(secret, AT)
    used = totp.match(secret, code, AT, None)
    assert used is not None
    assert totp.match(secret, code, AT, used) is None  # replay
    earlier = totp.code_at(secret, AT - STEP)
    assert totp.match(secret, earlier, AT, used) is None  # an older code after a newer one
    assert totp.match(secret, totp.code_at(secret, AT + STEP), AT, used) == used + 1


def test_malformed_codes_are_refused() -> None:
    secret = totp.new_secret()
    for code in ("", "12345", "1234567", "abcdef", "12 34 5x"):
        assert totp.match(secret, code, AT, None) is None
    spaced = totp.code_at(secret, AT)
    assert totp.match(secret, f"{spaced[:3]} {spaced[3:]}", AT, None) is not None


def test_provisioning_uri_names_the_account_and_carries_the_secret() -> None:
    secret = totp.new_secret()
    uri = urlparse(totp.provisioning_uri(secret, "boss@clinic.example"))
    assert uri.scheme == "otpauth"
    assert uri.netloc == "totp"
    query = parse_qs(uri.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["carepost"]
    assert len(secret) == 32  # 160 bits of base 32


def test_recovery_codes_are_distinct_and_normalize() -> None:
    codes = totp.new_recovery_codes()
    assert len(codes) == totp.RECOVERY_CODES == len(set(codes))
    for code in codes:
        assert len(totp.normalize_recovery(code)) == 12
        assert totp.normalize_recovery(f"  {code.upper()} ") == totp.normalize_recovery(code)
