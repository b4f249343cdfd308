"""End-to-end encryption of one message's body for its recipient: S/MIME (RFC 8551,
`application/pkcs7-mime; smime-type=enveloped-data`) or PGP/MIME (RFC 3156,
`multipart/encrypted; protocol="application/pgp-encrypted"`).

`choose` is the pure decision (the sender profile's mode, the contact's keys, a time);
the encrypt functions take the MIME entity that `content.mime` builds (the
multipart/alternative part, with its own header lines) and return the encrypted entity
that replaces it after the outer header block. The outer headers (From, To, Date,
Message-ID, List-Unsubscribe*) stay outside, as delivery and one-click unsubscribe need
them, and DKIM signs the outer message after encryption.

The Subject is the one outer header that can carry PHI (a `secure_delivery` template
may put PHI there), and plain S/MIME and PGP leave it readable to every relay. So every
encrypted message carries the real Subject inside, as a protected header (the inner
entity's `protected-headers="v1"`, read by Thunderbird, K-9/Thunderbird for Android and
others), and a neutral outer Subject. Mail clients without protected-header support
show "Encrypted message" as the subject; that is the safe failure.

Ciphers: S/MIME content is AES-256-CBC, the strongest content cipher cryptography's
PKCS7EnvelopeBuilder offers (it has no AuthEnvelopedData, so no AES-GCM), to RSA
recipients; OpenPGP uses whatever Sequoia's standard policy negotiates with the
recipient's certificate (AES-256 with SEIPD integrity protection for current keys).
"""

from __future__ import annotations

import base64
import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

import pysequoia
from cryptography import x509
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from carepost.content.mime import MimeLayout

OFF = "off"
SMIME = "smime"
PGP = "pgp"
PREFER = "prefer"
MODES = (OFF, SMIME, PGP, PREFER)
METHODS = (SMIME, PGP)

# Outbox reasons (outbox.last_reason, the transition's detail).
NO_RECIPIENT_KEY = "no_recipient_key"  # the profile requires a kind the contact lacks
ENCRYPT_FAILED = "e2e_encrypt_failed"  # the stored key would not encrypt (e.g. expired)

NEUTRAL_SUBJECT = "Encrypted message"


class E2eError(Exception):
    """A message could not be encrypted for its recipient; names the kind only."""


class KeyLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def not_after(self) -> datetime | None: ...
    @property
    def material(self) -> bytes: ...


@dataclass(frozen=True)
class Choice:
    """How one recipient's message goes: `key` set means encrypted to it; `reason` set
    means it must not go at all; neither means the normal (TLS) path."""

    key: KeyLike | None = None
    reason: str | None = None

    @property
    def method(self) -> str | None:
        return self.key.kind if self.key is not None else None


PLAIN = Choice()


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"e2e must be one of {', '.join(MODES)}")
    return mode


def choose(mode: str, keys: Sequence[KeyLike], at: datetime) -> Choice:
    """The sender profile's `e2e` mode against the contact's keys (oldest first) at `at`:
    - off: the normal path, keys or not;
    - smime / pgp: the newest unexpired key of that kind, else NO_RECIPIENT_KEY;
    - prefer: the newest unexpired key of either kind, else the normal path."""
    if mode == OFF:
        return PLAIN
    usable = [k for k in keys if k.not_after is None or k.not_after > at]
    if mode == PREFER:
        return Choice(usable[-1]) if usable else PLAIN
    if mode not in METHODS:
        raise ValueError(f"unknown e2e mode {mode!r}")
    of_kind = [k for k in usable if k.kind == mode]
    return Choice(of_kind[-1]) if of_kind else Choice(reason=NO_RECIPIENT_KEY)


@functools.lru_cache(maxsize=32)
def protected_layout(layout: MimeLayout) -> MimeLayout:
    """The campaign's multipart/alternative layout as an inner entity: no MIME-Version
    (that belongs to the outer message) and marked as carrying protected headers."""
    top = (
        b'Content-Type: multipart/alternative; boundary="'
        + layout.boundary
        + b'"; protected-headers="v1"\r\n\r\n'
    )
    return replace(layout, top=top)


def encrypt_entity(kind: str, inner: bytes, material: bytes) -> bytes:
    if kind == SMIME:
        return smime_entity(inner, material)
    if kind == PGP:
        return pgp_entity(inner, material)
    raise E2eError(f"unknown encryption kind {kind!r}")


def _b64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


SMIME_HEAD = (
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data;\r\n"
    b' name="smime.p7m"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
    b"\r\n"
)


def smime_entity(inner: bytes, cert_der: bytes) -> bytes:
    """RFC 8551 enveloped-data over the inner entity's exact bytes (already canonical
    CRLF MIME, so the Binary option: no translation)."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        der = (
            pkcs7.PKCS7EnvelopeBuilder()
            .set_data(inner)
            .add_recipient(cert)
            .set_content_encryption_algorithm(algorithms.AES256)
            .encrypt(Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )
    except (ValueError, TypeError) as exc:
        raise E2eError("the S/MIME certificate would not encrypt") from exc
    return SMIME_HEAD + _b64_lines(der)


def pgp_entity(inner: bytes, cert_bytes: bytes, boundary: str | None = None) -> bytes:
    """RFC 3156 PGP/MIME: a version part and the ASCII-armored OpenPGP message."""
    try:
        cert = pysequoia.Cert.from_bytes(cert_bytes)
        armored = pysequoia.encrypt(inner, [cert], armor=True)
    except Exception as exc:  # the binding raises plain exceptions
        raise E2eError("the OpenPGP certificate would not encrypt") from exc
    # "=_" never occurs in ASCII armor (base64 has no underscore).
    b = (boundary or f"=_cp_pgp_{secrets.token_hex(12)}").encode("ascii")
    armored = armored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not armored.endswith(b"\r\n"):
        armored += b"\r\n"
    return b"".join(
        (
            b"MIME-Version: 1.0\r\n",
            b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";'
            b' boundary="' + b + b'"\r\n\r\n',
            b"This is an OpenPGP/MIME encrypted message (RFC 3156).\r\n",
            b"--" + b + b"\r\n",
            b"Content-Type: application/pgp-encrypted\r\n",
            b"Content-Description: PGP/MIME version identification\r\n\r\n",
            b"Version: 1\r\n\r\n",
            b"--" + b + b"\r\n",
            b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n',
            b"Content-Description: OpenPGP encrypted message\r\n",
            b'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n',
            armored,
            b"\r\n--" + b + b"--\r\n",
        )
    )
