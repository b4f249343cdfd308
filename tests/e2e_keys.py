"""Test identities for end-to-end mail: S/MIME certificates (self-signed, made here with
cryptography) and OpenPGP keys (made with pysequoia), each with its private half so a
test can decrypt what carepost encrypted."""

from __future__ import annotations

import email
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message

import pysequoia
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    pkcs7,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class SmimeIdentity:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def smime_identity(
    address: str | None,
    *,
    name: str = "Pat Synthetic",
    not_before: datetime | None = None,
    days: float = 365,
    key_usage: str = "encipher",  # encipher | sign-only | none
    eku: ExtendedKeyUsageOID | None = ExtendedKeyUsageOID.EMAIL_PROTECTION,
    ec_key: bool = False,
    bits: int = 2048,
) -> SmimeIdentity:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if ec_key
        else rsa.generate_private_key(public_exponent=65537, key_size=bits)
    )
    start = not_before or datetime.now(UTC) - timedelta(hours=1)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
    )
    if address:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False
        )
    if key_usage != "none":
        encipher = key_usage == "encipher"
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=encipher,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    return SmimeIdentity(builder.sign(key, hashes.SHA256()), key)


def smime_decrypt(message: bytes, who: SmimeIdentity) -> bytes:
    """The inner entity of an S/MIME enveloped message, with the recipient's private key."""
    assert isinstance(who.key, rsa.RSAPrivateKey)
    return pkcs7.pkcs7_decrypt_smime(message, who.cert, who.key, [])


@dataclass(frozen=True)
class PgpIdentity:
    tsk: pysequoia.Tsk

    @property
    def public(self) -> bytes:
        return str(self.tsk.extract_certificate()).encode()

    @property
    def fingerprint(self) -> str:
        return self.tsk.extract_certificate().fingerprint


def pgp_identity(
    address: str | None, *, name: str = "Pat Synthetic", validity_seconds: int | None = None
) -> PgpIdentity:
    uid = f"{name} <{address}>" if address else name
    # RFC 4880 (v4) keys: what patients' GnuPG and mail clients have today.
    return PgpIdentity(
        pysequoia.Tsk.generate(
            uid, profile=pysequoia.Profile.RFC4880, validity_seconds=validity_seconds
        )
    )


def pgp_armored_part(message: bytes) -> bytes:
    """The ASCII-armored OpenPGP message of a PGP/MIME (RFC 3156) message."""
    msg = email.message_from_bytes(message)
    assert msg.get_content_type() == "multipart/encrypted"
    assert msg.get_param("protocol") == "application/pgp-encrypted"
    parts = msg.get_payload()
    assert isinstance(parts, list)
    assert len(parts) == 2
    version, body = parts
    assert isinstance(version, Message)
    assert isinstance(body, Message)
    assert version.get_content_type() == "application/pgp-encrypted"
    assert "Version: 1" in str(version.get_payload())
    assert body.get_content_type() == "application/octet-stream"
    payload = body.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def pgp_decrypt(message: bytes, who: PgpIdentity) -> bytes:
    decrypted = pysequoia.decrypt(pgp_armored_part(message), who.tsk.decryptor())
    assert decrypted.bytes is not None
    return decrypted.bytes
