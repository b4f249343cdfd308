"""Envelope encryption: a per-contact data key (DEK) wrapped by a versioned KEK.

Every ciphertext is AES-256-GCM with associated data naming its table, column, row and
key version, so a ciphertext copied to another row or column fails to open. Deleting a
contact's wrapped DEK makes every copy of its data unreadable (crypto-shredding).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carepost.crypto.keyring import KeyRing
from carepost.crypto.nonces import random_bytes

_FORMAT = b"\x01"
_NONCE = 12


class DecryptionError(Exception):
    """A ciphertext did not open: wrong key, wrong row, or altered bytes."""


def aad(table: str, column: str, row_id: str, key_version: int) -> bytes:
    return f"{table}|{column}|{row_id}|{key_version}".encode()


def seal(cipher: AESGCM, plaintext: bytes, associated: bytes) -> bytes:
    nonce = random_bytes(_NONCE)
    return _FORMAT + nonce + cipher.encrypt(nonce, plaintext, associated)


def open_sealed(cipher: AESGCM, blob: bytes, associated: bytes) -> bytes:
    if not blob or blob[:1] != _FORMAT:
        raise DecryptionError("unknown ciphertext format")
    try:
        return cipher.decrypt(blob[1 : 1 + _NONCE], blob[1 + _NONCE :], associated)
    except InvalidTag:
        raise DecryptionError("ciphertext failed authentication for this row and key") from None


def new_dek() -> bytes:
    return os.urandom(32)


def wrap_dek(ring: KeyRing, dek: bytes, contact_id: str) -> tuple[int, bytes]:
    version = ring.primary_version
    return version, seal(ring.kek(version), dek, aad("contact_keys", "dek", contact_id, version))


def unwrap_dek(ring: KeyRing, wrapped: bytes, kek_version: int, contact_id: str) -> bytes:
    return open_sealed(
        ring.kek(kek_version), wrapped, aad("contact_keys", "dek", contact_id, kek_version)
    )
