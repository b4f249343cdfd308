"""Reading and judging a contact's public encryption key: an S/MIME certificate (X.509)
or an OpenPGP certificate. Pure: bytes and a time in, a `ParsedKey` or `KeyRejected` out.

A certificate names its holder, so nothing here puts its content (names, addresses,
user IDs) into an error message: errors say which file and what is wrong with it.

Trust is by import: a staff member vouches for the key by adding it to the contact, as
with any other contact detail. No chain to a CA is checked (patients' certificates come
from many CAs, or are self-made); the stored certificate is pinned, and the address it
names must be one of the contact's addresses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr

import pysequoia
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pysequoia.packet import PacketPile, Tag

from carepost.crypto.blind_index import normalize_email

SMIME = "smime"
PGP = "pgp"
KINDS = (SMIME, PGP)
MIN_RSA_BITS = 2048


class KeyRejected(ValueError):
    """A key file that cannot be used; the message names the file and the problem only."""


@dataclass(frozen=True)
class ParsedKey:
    kind: str
    fingerprint: str
    not_after: datetime | None
    # Normalized addresses the key names: PHI, for the blind-index comparison only.
    emails: tuple[str, ...]
    # What is stored (sealed): the certificate's DER, or the binary OpenPGP certificate.
    material: bytes


def parse_key(kind: str, data: bytes, *, at: datetime, where: str) -> ParsedKey:
    if kind == SMIME:
        return parse_smime(data, at=at, where=where)
    if kind == PGP:
        return parse_pgp(data, at=at, where=where)
    raise KeyRejected(f"{where}: unknown key kind; use one of {', '.join(KINDS)}")


# --- S/MIME ----------------------------------------------------------------------------
def load_smime(material: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(material)


def parse_smime(data: bytes, *, at: datetime, where: str) -> ParsedKey:
    if b"PRIVATE KEY-----" in data:
        raise KeyRejected(f"{where}: holds a private key; give only the certificate")
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
            if len(certs) != 1:
                raise KeyRejected(f"{where}: holds {len(certs)} certificates; give exactly one")
            cert = certs[0]
        else:
            cert = x509.load_der_x509_certificate(data)
    except ValueError as exc:
        if isinstance(exc, KeyRejected):
            raise
        raise KeyRejected(f"{where}: not an X.509 certificate (PEM or DER)") from None
    if cert.not_valid_before_utc > at:
        start = _day(cert.not_valid_before_utc)
        raise KeyRejected(f"{where}: the certificate is not valid before {start}")
    if cert.not_valid_after_utc <= at:
        raise KeyRejected(f"{where}: the certificate expired on {_day(cert.not_valid_after_utc)}")
    public = cert.public_key()
    # cryptography's PKCS7EnvelopeBuilder encrypts to RSA recipients only (key transport).
    if not isinstance(public, rsa.RSAPublicKey):
        raise KeyRejected(
            f"{where}: the certificate's key is not RSA; S/MIME encryption here needs RSA"
        )
    if public.key_size < MIN_RSA_BITS:
        raise KeyRejected(f"{where}: the RSA key has {public.key_size} bits; at least 2048")
    _check_smime_usage(cert, where)
    emails = _smime_emails(cert)
    if not emails:
        raise KeyRejected(f"{where}: the certificate names no email address")
    der = cert.public_bytes(Encoding.DER)
    return ParsedKey(SMIME, hashlib.sha256(der).hexdigest(), cert.not_valid_after_utc, emails, der)


def _check_smime_usage(cert: x509.Certificate, where: str) -> None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_encipherment:
        raise KeyRejected(f"{where}: the certificate's key usage does not allow encryption")
    try:
        extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    allowed = {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    if not allowed & set(extended):
        raise KeyRejected(f"{where}: the certificate is not for email protection")


def _smime_emails(cert: x509.Certificate) -> tuple[str, ...]:
    found: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found += san.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        pass
    for attr in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        if isinstance(attr.value, str):
            found.append(attr.value)
    return _normalized(found)


# --- OpenPGP ---------------------------------------------------------------------------
def load_pgp(material: bytes) -> pysequoia.Cert:
    return pysequoia.Cert.from_bytes(material)


def parse_pgp(data: bytes, *, at: datetime, where: str) -> ParsedKey:
    if b"PRIVATE KEY BLOCK" in data:
        raise KeyRejected(f"{where}: holds a secret key; give only the public key")
    try:
        certs = pysequoia.Cert.split_bytes(data)
    except Exception:  # the binding raises plain exceptions for bad input
        raise KeyRejected(f"{where}: not an OpenPGP certificate") from None
    if len(certs) != 1:
        raise KeyRejected(f"{where}: holds {len(certs)} OpenPGP certificates; give exactly one")
    cert = certs[0]
    if _holds_secrets(data):
        raise KeyRejected(f"{where}: holds a secret key; give only the public key")
    if cert.is_revoked:
        raise KeyRejected(f"{where}: the certificate is revoked")
    expires = cert.expiration
    if expires is not None and expires <= at:
        raise KeyRejected(f"{where}: the certificate expired on {_day(expires)}")
    # Sequoia's standard policy decides whether any subkey may encrypt now (key flags,
    # binding signatures, subkey expiry, algorithm strength): the same judgement it makes
    # when the message is sent.
    try:
        pysequoia.encrypt(b"probe", [cert], armor=False)
    except Exception:
        raise KeyRejected(f"{where}: the certificate has no valid encryption-capable key") from None
    emails = _normalized(parseaddr(str(uid))[1] for uid in cert.user_ids)
    if not emails:
        raise KeyRejected(f"{where}: no user ID of the certificate names an email address")
    return ParsedKey(PGP, cert.fingerprint.lower(), expires, emails, bytes(cert))


def _holds_secrets(data: bytes) -> bool:
    """A binary (unarmored) secret key: its packets say so."""
    return any(p.tag in (Tag.SecretKey, Tag.SecretSubkey) for p in PacketPile.from_bytes(data))


def _normalized(values: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        email = normalize_email(value)
        if "@" in email and email not in out:
            out.append(email)
    return tuple(out)


def _day(when: datetime) -> str:
    return when.strftime("%Y-%m-%d")
