"""Judging a key before it is stored: what is accepted (PEM, DER, armored, binary) and
every refusal, each named with the file and never with the certificate's content."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pysequoia
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from pysequoia.packet import PacketPile, Tag

from carepost.contacts.recipient_keys import KeyRejected, parse_key, parse_pgp, parse_smime
from e2e_keys import pgp_identity, smime_identity

NOW = datetime.now(UTC)
ADDRESS = "Pat.Synthetic@Example.org"
NAME = "Quxl Marker-Name"  # must never show in an error


def _rejects(match: str, kind: str, data: bytes, at: datetime = NOW) -> None:
    with pytest.raises(KeyRejected, match=match) as info:
        parse_key(kind, data, at=at, where="key-file.pem")
    text = str(info.value)
    assert text.startswith("key-file.pem: ")
    assert NAME not in text
    assert "pat.synthetic" not in text.lower()


def test_smime_pem_and_der_are_read_the_same() -> None:
    who = smime_identity(ADDRESS, name=NAME)
    pem = parse_smime(who.pem, at=NOW, where="f")
    der = parse_smime(who.der, at=NOW, where="f")
    assert pem == der
    assert pem.kind == "smime"
    assert pem.emails == ("pat.synthetic@example.org",)  # normalized
    assert pem.material == who.der
    assert len(pem.fingerprint) == 64
    assert pem.not_after == who.cert.not_valid_after_utc


def test_smime_without_usage_extensions_is_accepted() -> None:
    who = smime_identity(ADDRESS, key_usage="none", eku=None)
    assert parse_smime(who.pem, at=NOW, where="f").kind == "smime"


def test_smime_any_extended_key_usage_is_accepted() -> None:
    who = smime_identity(ADDRESS, eku=ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)
    assert parse_smime(who.pem, at=NOW, where="f").kind == "smime"


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("garbage", "not an X.509 certificate"),
        ("garbage-pem", "not an X.509 certificate"),
        ("expired", "expired on"),
        ("not-yet-valid", "not valid before"),
        ("no-email", "names no email address"),
        ("ec-key", "not RSA"),
        ("small-rsa", "at least 2048"),
        ("sign-only", "does not allow encryption"),
        ("server-auth", "not for email protection"),
        ("private-key", "holds a private key"),
        ("two-certs", "holds 2 certificates"),
    ],
)
def test_smime_refusals(case: str, match: str) -> None:
    ok = smime_identity(ADDRESS, name=NAME)
    data = {
        "garbage": lambda: b"\x30\x03\x02\x01\x01 not der",
        "garbage-pem": lambda: b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "expired": lambda: (
            smime_identity(ADDRESS, name=NAME, not_before=NOW - timedelta(days=40), days=30).pem
        ),
        "not-yet-valid": lambda: (
            smime_identity(ADDRESS, name=NAME, not_before=NOW + timedelta(days=1)).pem
        ),
        "no-email": lambda: smime_identity(None, name=NAME).pem,
        "ec-key": lambda: smime_identity(ADDRESS, name=NAME, ec_key=True).pem,
        "small-rsa": lambda: smime_identity(ADDRESS, name=NAME, bits=1024).pem,
        "sign-only": lambda: smime_identity(ADDRESS, name=NAME, key_usage="sign-only").pem,
        "server-auth": lambda: (
            smime_identity(ADDRESS, name=NAME, eku=ExtendedKeyUsageOID.SERVER_AUTH).pem
        ),
        "private-key": lambda: ok.pem + ok.key_pem,
        "two-certs": lambda: ok.pem + smime_identity(ADDRESS).pem,
    }[case]()
    _rejects(match, "smime", data)


def test_pgp_armored_and_binary_are_read_the_same() -> None:
    who = pgp_identity(ADDRESS, name=NAME)
    armored = parse_pgp(who.public, at=NOW, where="f")
    binary = parse_pgp(bytes(pysequoia.Cert.from_bytes(who.public)), at=NOW, where="f")
    assert armored == binary
    assert armored.kind == "pgp"
    assert armored.fingerprint == who.fingerprint
    assert armored.emails == ("pat.synthetic@example.org",)
    assert armored.not_after is None
    assert b"PRIVATE" not in armored.material


def test_pgp_with_expiry_records_it() -> None:
    who = pgp_identity(ADDRESS, validity_seconds=86400 * 30)
    parsed = parse_pgp(who.public, at=NOW, where="f")
    assert parsed.not_after is not None
    assert NOW + timedelta(days=29) < parsed.not_after <= NOW + timedelta(days=31)


def _without_encryption_subkey(public: bytes) -> bytes:
    """The certificate with its encryption subkey (and that subkey's binding) removed."""
    packets = list(PacketPile.from_bytes(public))
    keep = []
    i = 0
    while i < len(packets):
        p = packets[i]
        binding = packets[i + 1] if i + 1 < len(packets) else None
        flags = binding.key_flags if binding is not None else None
        if p.tag == Tag.PublicSubkey and flags is not None and flags.transport_encryption:
            i += 2
            continue
        keep.append(p)
        i += 1
    return bytes(pysequoia.Cert.from_packets(keep))


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("garbage", "not an OpenPGP certificate"),
        ("secret-armored", "holds a secret key"),
        ("secret-binary", "holds a secret key"),
        ("expired", "expired on"),
        ("no-encryption-key", "no valid encryption-capable key"),
        ("no-email", "names an email address"),
        ("two-certs", "holds 2 OpenPGP certificates"),
    ],
)
def test_pgp_refusals(case: str, match: str) -> None:
    ok = pgp_identity(ADDRESS, name=NAME)
    at = NOW
    if case == "expired":
        data = pgp_identity(ADDRESS, name=NAME, validity_seconds=3600).public
        at = NOW + timedelta(hours=2)
    else:
        data = {
            "garbage": lambda: b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnope\n",
            "secret-armored": lambda: str(ok.tsk).encode(),
            "secret-binary": lambda: bytes(ok.tsk),
            "no-encryption-key": lambda: _without_encryption_subkey(ok.public),
            "no-email": lambda: pgp_identity(None, name=NAME).public,
            "two-certs": lambda: ok.public + pgp_identity(ADDRESS).public,
        }[case]()
    _rejects(match, "pgp", data, at)


def test_unknown_kind() -> None:
    _rejects("unknown key kind", "x509", b"")
