"""End-to-end encryption of a message body: the pure choice of method, S/MIME (RFC 8551)
and PGP/MIME (RFC 3156) round trips decrypted with the recipient's private key (and
with OpenSSL and GnuPG as independent references), tampering, the wrong key, and a whole
composed message whose outer headers stay outside, whose Subject moves inside, and whose
DKIM signature covers the encrypted bytes."""

from __future__ import annotations

import base64
import email
import email.policy
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import dkim as dkimpy
import pysequoia
import pytest
from cryptography.hazmat.primitives.serialization import pkcs7

from carepost.contacts.recipient_keys import parse_pgp
from carepost.content import mime
from carepost.content.template import TemplateSpec, compile_template
from carepost.content.tokens import TokenSigner
from carepost.crypto.keyring import KeyRing
from carepost.delivery import dkim, e2e
from carepost.delivery.compose import CampaignKit, compose, finish
from e2e_keys import (
    pgp_armored_part,
    pgp_decrypt,
    pgp_identity,
    smime_decrypt,
    smime_identity,
)

AT = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ADDRESS = "patient@example.org"
MARKER = "Zyxwv-Marker-7731"  # a PHI stand-in that must never show on the wire
INNER = (
    b'Content-Type: multipart/alternative; boundary="=_b"; protected-headers="v1"\r\n'
    b"Subject: " + MARKER.encode() + b"\r\n\r\n"
    b"--=_b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nDear " + MARKER.encode() + b"\r\n"
    b"--=_b--\r\n"
)


@dataclass(frozen=True)
class Key:
    kind: str
    not_after: datetime | None
    material: bytes
    label: str = ""


# --- the choice ------------------------------------------------------------------------
S_OLD = Key("smime", AT + timedelta(days=30), b"s1", "s_old")
S_NEW = Key("smime", AT + timedelta(days=60), b"s2", "s_new")
S_EXPIRED = Key("smime", AT - timedelta(seconds=1), b"s3", "s_expired")
S_ENDS_NOW = Key("smime", AT, b"s4", "s_ends_now")
P_ONE = Key("pgp", None, b"p1", "p_one")


@pytest.mark.parametrize(
    ("mode", "keys", "key", "reason"),
    [
        ("off", [S_OLD, P_ONE], None, None),  # off ignores keys on file
        ("off", [], None, None),
        ("smime", [S_OLD, S_NEW], "s_new", None),  # the newest of the kind
        ("smime", [S_NEW, P_ONE], "s_new", None),
        ("smime", [P_ONE], None, e2e.NO_RECIPIENT_KEY),  # the wrong kind is no key
        ("smime", [], None, e2e.NO_RECIPIENT_KEY),
        ("smime", [S_EXPIRED], None, e2e.NO_RECIPIENT_KEY),  # expired is no key
        ("smime", [S_ENDS_NOW], None, e2e.NO_RECIPIENT_KEY),  # not_after is exclusive
        ("smime", [S_OLD, S_EXPIRED], "s_old", None),  # an expired newer one is skipped
        ("pgp", [S_OLD, P_ONE], "p_one", None),  # no expiry: always usable
        ("pgp", [S_OLD], None, e2e.NO_RECIPIENT_KEY),
        ("prefer", [], None, None),  # prefer without a key: the normal path
        ("prefer", [S_EXPIRED], None, None),
        ("prefer", [P_ONE, S_OLD], "s_old", None),  # the newest of either kind
        ("prefer", [S_OLD, P_ONE], "p_one", None),
    ],
)
def test_choose(mode: str, keys: list[Key], key: str | None, reason: str | None) -> None:
    choice = e2e.choose(mode, keys, AT)
    assert choice.reason == reason
    got = choice.key
    assert (got.label if isinstance(got, Key) else None) == key
    assert choice.method == (got.kind if got is not None else None)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown e2e mode"):
        e2e.choose("sometimes", [S_OLD], AT)
    with pytest.raises(ValueError, match="off, smime, pgp, prefer"):
        e2e.check_mode("on")
    assert e2e.check_mode("prefer") == "prefer"


# --- S/MIME ----------------------------------------------------------------------------
def _wrap(entity: bytes) -> bytes:
    return b"From: a@clinic.example\r\nTo: " + ADDRESS.encode() + b"\r\n" + entity


def test_smime_round_trip() -> None:
    who = smime_identity(ADDRESS)
    entity = e2e.smime_entity(INNER, who.der)
    msg = email.message_from_bytes(_wrap(entity))
    assert msg.get_content_type() == "application/pkcs7-mime"
    assert msg.get_param("smime-type") == "enveloped-data"
    assert msg["Content-Transfer-Encoding"] == "base64"
    assert MARKER.encode() not in entity
    assert all(len(line) <= 76 for line in entity.split(b"\r\n"))
    assert smime_decrypt(_wrap(entity), who) == INNER
    der = msg.get_payload(decode=True)
    assert isinstance(der, bytes)
    assert pkcs7.pkcs7_decrypt_der(der, who.cert, who.key, []) == INNER


OPENSSL_DECRYPT = ["openssl", "cms", "-decrypt", "-binary"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")
def test_smime_decrypts_with_openssl(tmp_path: Path) -> None:
    """OpenSSL as an independent reference, and the content cipher is AES-256-CBC."""
    who = smime_identity(ADDRESS)
    (tmp_path / "cert.pem").write_bytes(who.pem)
    (tmp_path / "key.pem").write_bytes(who.key_pem)
    (tmp_path / "msg.eml").write_bytes(_wrap(e2e.smime_entity(INNER, who.der)))
    done = subprocess.run(
        [*OPENSSL_DECRYPT, "-in", "msg.eml", "-recip", "cert.pem", "-inkey", "key.pem"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )
    assert done.stdout == INNER
    info = subprocess.run(
        ["openssl", "cms", "-cmsout", "-print", "-in", "msg.eml"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
        text=True,
    )
    assert "aes-256-cbc" in info.stdout


def test_smime_wrong_key_does_not_decrypt() -> None:
    who, other = smime_identity(ADDRESS), smime_identity(ADDRESS)
    message = _wrap(e2e.smime_entity(INNER, who.der))
    with pytest.raises(ValueError, match="No recipient found"):
        smime_decrypt(message, other)


def test_smime_tampering_never_yields_the_original() -> None:
    """Enveloped-data (CBC) has no integrity check of its own: a flipped ciphertext byte
    either breaks the padding or garbles the content, never yields the message. (In
    transit, DKIM over the whole outer message detects it; see the compose test.)"""
    who = smime_identity(ADDRESS)
    entity = e2e.smime_entity(INNER, who.der)
    der = email.message_from_bytes(_wrap(entity)).get_payload(decode=True)
    assert isinstance(der, bytes)
    for offset in (len(der) - 1, len(der) - 20, len(der) - 40):
        bad = bytearray(der)
        bad[offset] ^= 0x01
        try:
            out = pkcs7.pkcs7_decrypt_der(bytes(bad), who.cert, who.key, [])
        except ValueError:
            continue
        assert out != INNER


def test_smime_refuses_a_certificate_it_cannot_encrypt_to() -> None:
    ec_cert = smime_identity(ADDRESS, ec_key=True)
    with pytest.raises(e2e.E2eError, match="S/MIME"):
        e2e.smime_entity(INNER, ec_cert.der)
    with pytest.raises(e2e.E2eError):
        e2e.smime_entity(INNER, b"not a certificate")


# --- PGP/MIME --------------------------------------------------------------------------
def test_pgp_round_trip() -> None:
    who = pgp_identity(ADDRESS)
    cert = pysequoia.Cert.from_bytes(who.public)
    entity = e2e.pgp_entity(INNER, bytes(cert))
    assert MARKER.encode() not in entity
    assert b"\n" not in entity.replace(b"\r\n", b"")  # CRLF line ends only
    assert pgp_decrypt(_wrap(entity), who) == INNER
    assert pgp_armored_part(_wrap(entity)).startswith(b"-----BEGIN PGP MESSAGE-----")


@pytest.mark.skipif(shutil.which("gpg") is None, reason="no gpg binary")
def test_pgp_decrypts_with_gnupg(tmp_path: Path) -> None:
    """GnuPG as an independent reference, with a key GnuPG made (what patients have):
    the key is accepted as it comes and the message decrypts with gpg."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    gpg = ["gpg", "--batch", "--quiet", "--no-tty", "--pinentry-mode", "loopback"]
    gpg += ["--passphrase", ""]
    try:
        subprocess.run(
            [*gpg, "--quick-gen-key", f"Pat <{ADDRESS}>", "default", "default", "never"],
            env=env,
            check=True,
            capture_output=True,
        )
        public = subprocess.run(
            [*gpg, "--export", "--armor", ADDRESS], env=env, check=True, capture_output=True
        ).stdout
        parsed = parse_pgp(public, at=datetime.now(UTC), where="gpg.asc")
        assert parsed.emails == (ADDRESS,)
        armored = pgp_armored_part(_wrap(e2e.pgp_entity(INNER, parsed.material)))
        done = subprocess.run(
            [*gpg, "--decrypt"], input=armored, env=env, capture_output=True, check=True
        )
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False)
    assert done.stdout == INNER


def test_pgp_wrong_key_does_not_decrypt() -> None:
    who, other = pgp_identity(ADDRESS), pgp_identity(ADDRESS)
    message = _wrap(e2e.pgp_entity(INNER, who.public))
    with pytest.raises(RuntimeError, match="No key to decrypt"):
        pgp_decrypt(message, other)


def test_pgp_tampering_is_detected() -> None:
    """OpenPGP's integrity protection (SEIPD) refuses an altered ciphertext."""
    who = pgp_identity(ADDRESS)
    armored = pgp_armored_part(_wrap(e2e.pgp_entity(INNER, who.public)))
    binary = bytearray(_dearmor(armored))
    binary[-10] ^= 0x01
    with pytest.raises(Exception):  # noqa: B017, PT011 (the binding raises plain exceptions)
        pysequoia.decrypt(bytes(binary), who.tsk.decryptor())


def _dearmor(armored: bytes) -> bytes:
    lines = armored.decode().strip().splitlines()
    body = [ln for ln in lines[1:-1] if ln and ":" not in ln and not ln.startswith("=")]
    return base64.b64decode("".join(body))


def test_pgp_refuses_garbage() -> None:
    with pytest.raises(e2e.E2eError, match="OpenPGP"):
        e2e.pgp_entity(INNER, b"not a key")


# --- a whole message -------------------------------------------------------------------
RING = KeyRing.generate()
DKIM_KEY = dkim.generate_key("rsa-sha256")
HTML = "<html><body><p>Dear {{ first_name }},</p><p>Your results are ready.</p></body></html>"


def _kit() -> CampaignKit:
    spec = TemplateSpec(
        "results",
        "{{ first_name }}, your results",
        HTML,
        "treatment",
        ("first_name",),
        secure_delivery=True,
    )
    return CampaignKit(
        campaign_id="a" * 32,
        campaign_name="results",
        message_class="treatment",
        channel="email",
        topic="care",
        sender_id="clinic",
        from_address="care@clinic.example",
        return_path="bounces@clinic.example",
        postal_address="1 Main St, Springfield MA",
        organization_name="Clinic",
        sender_name="Clinic",
        message_id_domain="clinic.example",
        template=compile_template(spec),
        layout=mime.MimeLayout.alternative(),
        fixed_headers=mime.header_line(
            "From", mime.format_address("Clinic", "care@clinic.example")
        ),
        signer=dkim.DkimSigner("clinic.example", "s1", DKIM_KEY),
        public_url="https://mail.clinic.example",
        track=True,
        e2e_mode="smime",
    )


@pytest.mark.parametrize("kind", ["smime", "pgp"])
def test_composed_message_hides_body_and_subject(kind: str) -> None:
    kit = _kit()
    if kind == "smime":
        sm = smime_identity(ADDRESS)
        key = Key("smime", None, sm.der)
    else:
        pg = pgp_identity(ADDRESS)
        key = Key("pgp", None, bytes(pysequoia.Cert.from_bytes(pg.public)))
    record = {"name": {"given": [MARKER]}, "emails": [ADDRESS]}
    draft = compose(kit, RING, TokenSigner(RING), "0" * 32, "c" * 32, record, [], AT, key)
    assert draft is not None
    sent = finish(draft, kit.signer)
    assert MARKER.encode() not in sent.data
    assert dkimpy.verify(
        sent.data, dnsfunc=lambda n, timeout=5: dkim.dns_record_value(DKIM_KEY).encode()
    )
    outer = email.message_from_bytes(sent.data, policy=email.policy.default)
    assert outer["Subject"] == e2e.NEUTRAL_SUBJECT
    assert outer["To"] == ADDRESS
    assert outer["Message-ID"] == f"<{'0' * 32}@clinic.example>"
    assert outer["List-Unsubscribe"].startswith("<https://mail.clinic.example/u/")
    assert outer["MIME-Version"] == "1.0"
    inner_bytes = smime_decrypt(sent.data, sm) if kind == "smime" else pgp_decrypt(sent.data, pg)
    inner = email.message_from_bytes(inner_bytes, policy=email.policy.default)
    assert isinstance(inner, EmailMessage)
    assert inner.get_content_type() == "multipart/alternative"
    assert inner.get_param("protected-headers") == "v1"
    assert inner["Subject"] == f"{MARKER}, your results"
    assert inner["Message-ID"] == outer["Message-ID"]
    assert inner["MIME-Version"] is None  # it belongs to the outer message
    text = inner.get_body(("plain",))
    assert text is not None
    assert f"Dear {MARKER}," in text.get_content()
    # A byte changed in transit breaks the DKIM signature over the encrypted bytes.
    tampered = sent.data.replace(b"\r\n\r\n", b"\r\n\r\n ", 1)
    assert not dkimpy.verify(
        tampered, dnsfunc=lambda n, timeout=5: dkim.dns_record_value(DKIM_KEY).encode()
    )


def test_compose_without_key_is_unchanged() -> None:
    """The non-encrypted path: the real subject outside, no encryption."""
    kit = _kit()
    record = {"name": {"given": ["Ada"]}, "emails": [ADDRESS]}
    draft = compose(kit, RING, TokenSigner(RING), "0" * 32, "c" * 32, record, [], AT)
    assert draft is not None
    msg = email.message_from_bytes(draft.body, policy=email.policy.default)
    assert msg["Subject"] == "Ada, your results"
    assert msg.get_content_type() == "multipart/alternative"
