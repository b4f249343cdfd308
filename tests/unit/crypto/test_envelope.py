"""Envelope encryption: AAD binding, key versions, file handling."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from carepost.crypto.blind_index import (
    blind_index,
    normalize_email,
    normalize_identifier,
    normalize_phone,
)
from carepost.crypto.envelope import (
    DecryptionError,
    aad,
    new_dek,
    open_sealed,
    seal,
    unwrap_dek,
    wrap_dek,
)
from carepost.crypto.keyring import KeyFileError, KeyRing, create_key_file, load_key_file

RING = KeyRing.generate()


@given(st.binary(max_size=2048), st.text(min_size=1, max_size=40))
def test_seal_round_trips_for_any_plaintext(plaintext: bytes, row: str) -> None:
    cipher = AESGCM(new_dek())
    assert (
        open_sealed(cipher, seal(cipher, plaintext, aad("t", "c", row, 1)), aad("t", "c", row, 1))
        == plaintext
    )


@pytest.mark.parametrize(
    "other",
    [
        aad("contacts", "phi", "row-2", 1),
        aad("contacts", "name", "row-1", 1),
        aad("facts", "phi", "row-1", 1),
        aad("contacts", "phi", "row-1", 2),
    ],
    ids=["other-row", "other-column", "other-table", "other-key-version"],
)
def test_ciphertext_moved_elsewhere_fails(other: bytes) -> None:
    cipher = AESGCM(new_dek())
    blob = seal(cipher, b"secret", aad("contacts", "phi", "row-1", 1))
    with pytest.raises(DecryptionError):
        open_sealed(cipher, blob, other)


def test_altered_ciphertext_fails() -> None:
    cipher = AESGCM(new_dek())
    blob = bytearray(seal(cipher, b"secret", b"a"))
    blob[-1] ^= 1
    with pytest.raises(DecryptionError):
        open_sealed(cipher, bytes(blob), b"a")


def test_same_plaintext_seals_differently() -> None:
    cipher = AESGCM(new_dek())
    assert seal(cipher, b"x", b"a") != seal(cipher, b"x", b"a")


def test_wrapped_dek_is_bound_to_its_contact_and_version() -> None:
    dek = new_dek()
    version, wrapped = wrap_dek(RING, dek, "contact-a")
    assert unwrap_dek(RING, wrapped, version, "contact-a") == dek
    with pytest.raises(DecryptionError):
        unwrap_dek(RING, wrapped, version, "contact-b")


def test_rotated_ring_reads_old_wraps_and_writes_new_version() -> None:
    dek = new_dek()
    v1, wrapped = wrap_dek(RING, dek, "c")
    rotated = RING.with_new_primary()
    assert rotated.primary_version == v1 + 1
    assert unwrap_dek(rotated, wrapped, v1, "c") == dek
    v2, rewrapped = wrap_dek(rotated, dek, "c")
    assert v2 == v1 + 1
    assert unwrap_dek(rotated, rewrapped, v2, "c") == dek


def test_blind_index_is_keyed_and_kind_separated() -> None:
    other = KeyRing.generate()
    value = normalize_email("  Pat@Example.ORG ")
    assert blind_index(RING, "email", value) == blind_index(RING, "email", "pat@example.org")
    assert blind_index(RING, "email", value) != blind_index(other, "email", value)
    assert blind_index(RING, "email", value) != blind_index(RING, "mrn", value)
    assert len(blind_index(RING, "email", value)) == 32


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("(617) 555-0100", "16175550100"),
        ("+1 617 555 0100", "16175550100"),
        ("+44 20 7946 0958", "442079460958"),
    ],
)
def test_phone_normalization(raw: str, normalized: str) -> None:
    assert normalize_phone(raw) == normalized


def test_identifier_normalization() -> None:
    assert normalize_identifier(" mrn 00 12 ") == "MRN0012"


def test_key_file_is_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    create_key_file(path, RING)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_key_file(path)
    assert loaded.keks == RING.keks
    assert loaded.verify_key_id() == RING.verify_key_id()
    with pytest.raises(KeyFileError, match="never overwrites"):
        create_key_file(path, KeyRing.generate())
    assert load_key_file(path).keks == RING.keks


def test_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    create_key_file(path, RING)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key_file(path)


def test_malformed_key_file_error_shows_no_key_material(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"format": 1, "keks": {"1": "c2VjcmV0"}}')
    os.close(fd)
    with pytest.raises(KeyFileError) as info:
        load_key_file(path)
    assert "c2VjcmV0" not in str(info.value)


@given(st.binary(max_size=300), st.text(min_size=1, max_size=30))
def test_fast_hmac_equals_the_standard_library(data: bytes, purpose: str) -> None:
    expected = hmac.new(RING.subkey(purpose), data, hashlib.sha256).hexdigest()
    assert RING.hmac_hex(purpose, data) == expected


def test_key_ring_repr_shows_no_key_material() -> None:
    text = repr(RING) + str(RING)
    for secret in [*RING.keks.values(), RING.blind_index_master, RING.signing_seed]:
        assert secret.hex() not in text
        assert repr(secret) not in text
