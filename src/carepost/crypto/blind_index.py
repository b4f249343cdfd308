"""Blind indexes: keyed HMAC of a normalized value, so equality lookups work on
encrypted data without the database ever holding the value itself."""

from __future__ import annotations

import re
import unicodedata

from carepost.crypto.keyring import KeyRing

_NON_DIGIT = re.compile(r"\D+")


def normalize_email(value: str) -> str:
    # Local parts are case-sensitive in theory; no real mailbox provider treats them so,
    # and a lookup that misses a duplicate is worse than one that merges two.
    if not value.isascii():  # NFKC changes nothing in ASCII, and costs more than the rest
        value = unicodedata.normalize("NFKC", value)
    return value.strip().lower()


def normalize_phone(value: str) -> str:
    digits = _NON_DIGIT.sub("", value)
    if len(digits) == 10:  # a North American number without its country code
        digits = "1" + digits
    return digits


def normalize_identifier(value: str) -> str:
    if not value.isascii():
        value = unicodedata.normalize("NFKC", value)
    return "".join(value.split()).upper()


def blind_index(ring: KeyRing, kind: str, normalized: str) -> str:
    """32 hex characters (128 bits) of HMAC-SHA256 under a per-kind derived key."""
    return ring.hmac_hex(f"carepost blind-index {kind}", normalized.encode())[:32]


def record_fingerprint(ring: KeyRing, payload: bytes) -> str:
    """Keyed digest of a plaintext record: tells 'unchanged' on re-import without decrypting."""
    return ring.hmac_hex("carepost record-fingerprint", payload)[:32]
