"""End-to-end encrypted campaigns through the real worker, a real STARTTLS SMTP sink and
the real database (both engines): contacts with keys get S/MIME or PGP/MIME messages
that decrypt with their private keys to the rendered content; nothing readable of the
message (body, PHI subject, name) is on the wire; contacts without a usable key follow
the sender profile's rule; the key commands as a user runs them, with bad input."""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from random import Random
from typing import Any

import dkim as dkimpy
import pytest
from sqlalchemy import func, select

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry
from carepost.campaigns import service as campaigns
from carepost.consent import service as consent
from carepost.contacts import key_service
from carepost.contacts.models import ContactEncryptionKey
from carepost.contacts.store import ContactInput, ContactWriter
from carepost.content.service import add_template
from carepost.content.template import TemplateSpec
from carepost.crypto.envelope import seal
from carepost.db import transaction
from carepost.delivery import dkim, e2e
from carepost.delivery.evidence import evidence
from carepost.delivery.models import DeliveryAttempt, OutboxMessage
from carepost.delivery.smtp import RelayConfig, SmtpTransport
from carepost.delivery.worker import Worker, WorkerConfig
from carepost.workspace import Workspace
from delivery_support import SENDER, add_contacts, authorization
from e2e_keys import (
    PgpIdentity,
    SmimeIdentity,
    pgp_decrypt,
    pgp_identity,
    smime_decrypt,
    smime_identity,
)
from smtp_sink import RELAY_TIMEOUT

PUBLIC = "https://mail.clinic.example"
HTML = (
    "<html><body><p>Dear {{ first_name }},</p><p>Flu shots are in.</p>"
    '<p><a href="https://clinic.example/flu">Book a visit</a></p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · {{ sender_postal_address }}</p>'
    "</body></html>"
)


def marker(i: int) -> str:
    return f"Qzmarker{i}Wvx"  # a given name that must never show on the wire encrypted


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _setup(
    ws: Workspace,
    actor: Actor,
    emails: Sequence[str],
    *,
    mode: str,
    subject: str,
    secure: bool,
    dkim_key_file: str,
) -> tuple[list[str], str]:
    with transaction(ws.engine) as session:
        writer = ContactWriter(session, ws.keyring, now=datetime.now(UTC), source="test")
        outcomes = writer.upsert_contacts(
            [
                ContactInput(
                    f"test:{i}",
                    {"v": 1, "name": {"given": [marker(i)], "family": "Synthetic"}, "emails": [a]},
                    [("email", a)],
                )
                for i, a in enumerate(emails)
            ]
        )
    ids = [o.contact_id for o in outcomes if o.contact_id]
    with transaction(ws.engine) as session:
        for cid in ids:
            consent.set_consent(
                session,
                contact_id=cid,
                channel="email",
                topic="flu",
                status="opted_in",
                source="form",
                actor=actor,
            )
            consent.add_authorization(
                session, ws.keyring, contact_id=cid, document=authorization(), actor=actor
            )
        campaigns.add_sender(
            session,
            sender_id=SENDER,
            from_name="Example Clinic",
            from_address="news@clinic.example",
            return_path="bounces@clinic.example",
            postal_address="1 Example Way, Springfield, MA 01101",
            organization_name="Example Clinic",
            dkim_domain="clinic.example",
            dkim_selector="s1",
            dkim_key_file=dkim_key_file,
            e2e=mode,
            actor=actor,
        )
        template = add_template(
            session,
            TemplateSpec(
                "flu", subject, HTML, "marketing", ("first_name",), secure_delivery=secure
            ),
            actor=actor,
        )
        campaign = campaigns.create_campaign(
            session,
            name="Flu 2026",
            segment="all",
            template_id=template.id,
            sender_id=SENDER,
            topic="flu",
            actor=actor,
        )
    return ids, campaign.id


def _start(ws: Workspace, actor: Actor, campaign_id: str, ids: list[str]) -> None:
    with transaction(ws.engine) as session:
        campaigns.start_campaign(session, campaign_id, members=ids, membership_ref="t", actor=actor)


def _add_key(
    ws: Workspace,
    actor: Actor,
    contact_id: str,
    kind: str,
    data: bytes,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    with transaction(ws.engine) as session:
        key_service.add_key(
            session,
            ws.keyring,
            contact_id=contact_id,
            kind=kind,
            data=data,
            where=f"{kind}-key",
            actor=actor,
            clock=clock,
        )


def _worker(ws: Workspace, sink: Any, clock: Clock) -> Worker:
    relay = RelayConfig(
        sink.host, sink.port, tls_context=sink.client_context, timeout=RELAY_TIMEOUT
    )
    return Worker(
        ws.engine,
        ws.keyring,
        SmtpTransport(relay),
        WorkerConfig(public_url=PUBLIC, batch_size=10),
        name="w1",
        clock=clock,
        rng=Random(3),
    )


@pytest.fixture
def dkim_setup(tmp_path: Path) -> tuple[str, Callable[..., bytes]]:
    key = dkim.generate_key("rsa-sha256")
    path = tmp_path / "dkim.pem"
    path.write_bytes(dkim.private_pem(key))
    record = dkim.dns_record_value(key).encode()
    return str(path), lambda name, timeout=5: record


def _received(sink: Any) -> dict[str, bytes]:
    return {r.rcpt_tos[0]: r.data for r in sink.state.received}


def _inner(data: bytes, who: SmimeIdentity | PgpIdentity) -> EmailMessage:
    raw = smime_decrypt(data, who) if isinstance(who, SmimeIdentity) else pgp_decrypt(data, who)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _outbox_id(session: Any, contact_id: str) -> str:
    return str(
        session.scalar(select(OutboxMessage.id).where(OutboxMessage.contact_id == contact_id))
    )


def _methods(ws: Workspace) -> dict[str, str]:
    with transaction(ws.engine) as s:
        return dict(
            s.execute(
                select(OutboxMessage.contact_id, DeliveryAttempt.method).join(
                    DeliveryAttempt, DeliveryAttempt.outbox_id == OutboxMessage.id
                )
            ).all()
        )


def test_prefer_encrypts_for_contacts_with_keys(
    workspace: Workspace,
    actor: Actor,
    smtp_sink_factory: Any,
    dkim_setup: tuple[str, Callable[..., bytes]],
) -> None:
    key_file, dns = dkim_setup
    emails = ["smime.0@sink.test", "pgp.1@sink.test", "plain.2@sink.test"]
    ids, campaign_id = _setup(
        workspace,
        actor,
        emails,
        mode="prefer",
        subject="Flu shots are here",
        secure=False,
        dkim_key_file=key_file,
    )
    sm = smime_identity(emails[0])
    pg = pgp_identity(emails[1])
    _add_key(workspace, actor, ids[0], "smime", sm.pem)
    _add_key(workspace, actor, ids[1], "pgp", pg.public)
    _start(workspace, actor, campaign_id, ids)
    sink = smtp_sink_factory()

    report = _worker(workspace, sink, Clock()).run()

    assert report.results == {"sent": 3}
    assert report.unencryptable == 0
    got = _received(sink)
    assert set(got) == set(emails)
    assert all(r.tls for r in sink.state.received)
    for i, who in ((0, sm), (1, pg)):
        data = got[emails[i]]
        assert marker(i).encode() not in data
        assert b"Flu shots are in" not in data
        assert dkimpy.verify(data, dnsfunc=dns)  # DKIM signs the encrypted message
        outer = email.message_from_bytes(data, policy=email.policy.default)
        assert outer["Subject"] == e2e.NEUTRAL_SUBJECT
        assert outer["List-Unsubscribe"].startswith(f"<{PUBLIC}/u/")
        assert outer.get_content_type() == (
            "application/pkcs7-mime" if i == 0 else "multipart/encrypted"
        )
        inner = _inner(data, who)
        assert inner["Subject"] == "Flu shots are here"
        assert inner["Message-ID"] == outer["Message-ID"]
        text = inner.get_body(("plain",))
        assert text is not None
        assert f"Dear {marker(i)}," in text.get_content()
        html = inner.get_body(("html",))
        assert html is not None
        assert f"{PUBLIC}/t/c/" in html.get_content()  # tracked links, inside
    # The contact without a key got the normal message: the marker check above means
    # something, since here the name is readable in the quoted-printable text part.
    plain = email.message_from_bytes(got[emails[2]], policy=email.policy.default)
    assert plain.get_content_type() == "multipart/alternative"
    assert marker(2).encode() in got[emails[2]]
    assert _methods(workspace) == {ids[0]: "smime", ids[1]: "pgp", ids[2]: "tls_relay"}
    with transaction(workspace.engine) as s:
        reads = s.scalars(select(AuditEntry).where(AuditEntry.action == "delivery.phi_read")).all()
        ev = evidence(s, _outbox_id(s, ids[0]))
    assert len(reads) == 1  # one audited read for the batch, keys included
    assert json.loads(reads[0].details)["encryption_keys"] is True
    assert sorted(json.loads(reads[0].subjects)) == sorted(ids)
    assert ev["attempts"][0]["method"] == "smime"
    assert audit.verify(workspace.engine).ok


def test_required_smime_fails_without_a_usable_key(
    workspace: Workspace,
    actor: Actor,
    smtp_sink_factory: Any,
    dkim_setup: tuple[str, Callable[..., bytes]],
    carepost: Any,
) -> None:
    """A secure_delivery template with PHI in the subject, sender requiring S/MIME."""
    key_file, dns = dkim_setup
    emails = [
        "smime.0@sink.test",
        "pgponly.1@sink.test",
        "nokey.2@sink.test",
        "expiring.3@sink.test",
        "broken.4@sink.test",
    ]
    ids, campaign_id = _setup(
        workspace,
        actor,
        emails,
        mode="smime",
        subject="{{ first_name }}, your flu shot",
        secure=True,
        dkim_key_file=key_file,
    )
    sm = smime_identity(emails[0])
    _add_key(workspace, actor, ids[0], "smime", sm.der)
    _add_key(workspace, actor, ids[1], "pgp", pgp_identity(emails[1]).public)
    # Valid when it was added ten days ago, expired since.
    past = datetime.now(UTC) - timedelta(days=10)
    expired = smime_identity(emails[3], not_before=past - timedelta(days=1), days=2)
    _add_key(workspace, actor, ids[3], "smime", expired.pem, clock=lambda: past)
    _add_key(workspace, actor, ids[4], "smime", smime_identity(emails[4]).pem)
    # A stored key that no longer encrypts (here: material that is not a certificate,
    # sealed properly under the contact's key) fails the message, it never goes plain.
    with transaction(workspace.engine) as s:
        row = s.scalars(
            select(ContactEncryptionKey).where(ContactEncryptionKey.contact_id == ids[4])
        ).one()
        _, cipher = ContactWriter(s, workspace.keyring, now=datetime.now(UTC), source="t").cipher(
            ids[4]
        )
        row.material = seal(
            cipher, b"no longer a certificate", key_service.material_aad(row.id, row.dek_version)
        )
    _start(workspace, actor, campaign_id, ids)
    sink = smtp_sink_factory()
    report = _worker(workspace, sink, Clock()).run()

    assert report.results == {"sent": 1}
    assert report.unencryptable == 4
    got = _received(sink)
    assert list(got) == [emails[0]]  # nothing at all reached the others
    data = got[emails[0]]
    assert marker(0).encode() not in data  # neither in the body nor in the subject
    assert dkimpy.verify(data, dnsfunc=dns)
    outer = email.message_from_bytes(data, policy=email.policy.default)
    assert outer["Subject"] == e2e.NEUTRAL_SUBJECT
    inner = _inner(data, sm)
    assert inner["Subject"] == f"{marker(0)}, your flu shot"
    with transaction(workspace.engine) as s:
        rows = {
            o.contact_id: o
            for o in s.scalars(
                select(OutboxMessage).where(OutboxMessage.campaign_id == campaign_id)
            )
        }
        ev = evidence(s, rows[ids[1]].id)
        status = campaigns.campaign_status(s, campaign_id)
    assert {c: (r.state, r.last_reason) for c, r in rows.items()} == {
        ids[0]: ("sent", rows[ids[0]].last_reason),
        ids[1]: ("failed", e2e.NO_RECIPIENT_KEY),  # a PGP key does not satisfy "smime"
        ids[2]: ("failed", e2e.NO_RECIPIENT_KEY),
        ids[3]: ("failed", e2e.NO_RECIPIENT_KEY),  # expired at send time
        ids[4]: ("failed", e2e.ENCRYPT_FAILED),
    }
    assert ev["last_reason"] == e2e.NO_RECIPIENT_KEY
    assert ev["timeline"][-1]["detail"] == e2e.NO_RECIPIENT_KEY
    assert ev["attempts"] == []
    assert status.status == "done"
    assert _methods(workspace) == {ids[0]: "smime"}
    shown = carepost("outbox", "show", rows[ids[2]].id)
    assert f"failed ({e2e.NO_RECIPIENT_KEY})" in shown.stdout
    as_json = json.loads(carepost("message", "evidence", rows[ids[4]].id, "--json").stdout)
    assert as_json["last_reason"] == e2e.ENCRYPT_FAILED


def test_key_commands(workspace: Workspace, actor: Actor, carepost: Any, tmp_path: Path) -> None:
    address = "keyholder@example.org"
    [contact] = add_contacts(workspace, [address])
    name = "Quxl Holder-Name"  # in the certificates: must never be printed
    sm = smime_identity(address, name=name)
    pg = pgp_identity(address, name=name)
    files = {
        "smime.pem": sm.pem,
        "pgp.asc": pg.public,
        "garbage.pem": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "expired.pem": smime_identity(
            address, name=name, not_before=datetime.now(UTC) - timedelta(days=9), days=3
        ).pem,
        "other.pem": smime_identity("someone.else@example.org", name=name).pem,
        "secret.asc": str(pg.tsk).encode(),
        "sign-only.pem": smime_identity(address, name=name, key_usage="sign-only").pem,
    }
    for fname, data in files.items():
        (tmp_path / fname).write_bytes(data)

    def audit_count() -> int:
        with transaction(workspace.engine) as s:
            return int(s.scalar(select(func.count()).select_from(AuditEntry)) or 0)

    before = audit_count()
    bad = {
        "garbage.pem": "not an X.509 certificate",
        "expired.pem": "expired on",
        "other.pem": "names none of the contact's email addresses",
        "sign-only.pem": "does not allow encryption",
    }
    for fname, why in bad.items():
        r = carepost("contacts", "key", "add", "--contact", contact, "--smime", fname, check=False)
        assert r.returncode == 2, fname
        assert fname in r.stderr
        assert why in r.stderr
        assert name not in r.stderr + r.stdout
        assert "keyholder" not in r.stderr + r.stdout
    r = carepost("contacts", "key", "add", "--contact", contact, "--pgp", "secret.asc", check=False)
    assert r.returncode == 2
    assert "holds a secret key" in r.stderr
    r = carepost("contacts", "key", "add", "--contact", contact, check=False)
    assert r.returncode == 2
    assert "exactly one of --smime FILE or --pgp FILE" in r.stderr
    r = carepost("contacts", "key", "add", "--contact", "nope", "--smime", "smime.pem", check=False)
    assert r.returncode == 1
    assert "no contact with id nope" in r.stderr
    r = carepost(
        "contacts", "key", "add", "--contact", contact, "--smime", "missing.pem", check=False
    )
    assert r.returncode == 2
    assert "missing.pem: cannot read" in r.stderr
    # Nothing was written, not even an audit entry.
    assert audit_count() == before
    with transaction(workspace.engine) as s:
        assert s.scalar(select(func.count()).select_from(ContactEncryptionKey)) == 0

    added = json.loads(
        carepost(
            "contacts", "key", "add", "--contact", contact, "--smime", "smime.pem", "--json"
        ).stdout
    )
    assert added["kind"] == "smime"
    assert added["fingerprint"] == hashlib.sha256(sm.der).hexdigest()
    shown = carepost("contacts", "key", "add", "--contact", contact, "--pgp", "pgp.asc").stdout
    assert pg.fingerprint in shown
    again = carepost(
        "contacts", "key", "add", "--contact", contact, "--pgp", "pgp.asc", check=False
    )
    assert again.returncode == 2
    assert "already on file" in again.stderr

    listed = json.loads(carepost("contacts", "key", "list", "--contact", contact, "--json").stdout)
    assert [k["kind"] for k in listed] == ["smime", "pgp"]
    assert {k["fingerprint"] for k in listed} == {added["fingerprint"], pg.fingerprint}
    table = carepost("contacts", "key", "list", "--contact", contact)
    for text in (table.stdout, json.dumps(listed)):
        assert name not in text
        assert address not in text
    assert audit_count() == before + 2
    with transaction(workspace.engine) as s:
        stored = s.scalars(select(ContactEncryptionKey)).all()
        actions = s.scalars(select(AuditEntry.action).order_by(AuditEntry.seq)).all()
    # Sealed: the certificate's bytes (which name the holder) are not stored readable.
    for row in stored:
        assert name.encode() not in bytes(row.material)
        assert address.encode() not in bytes(row.material)
    assert actions[-2:] == ["contacts.key_added", "contacts.key_added"]

    removed = carepost("contacts", "key", "remove", "--contact", contact, pg.fingerprint)
    assert "removed" in removed.stdout
    r = carepost("contacts", "key", "remove", "--contact", contact, pg.fingerprint, check=False)
    assert r.returncode == 1
    assert "has no key" in r.stderr
    carepost("contacts", "key", "remove", "--contact", contact, added["id"])
    assert (
        json.loads(carepost("contacts", "key", "list", "--contact", contact, "--json").stdout) == []
    )
    with transaction(workspace.engine) as s:
        actions = s.scalars(select(AuditEntry.action).order_by(AuditEntry.seq)).all()
    assert actions[-2:] == ["contacts.key_removed", "contacts.key_removed"]
    assert audit.verify(workspace.engine).ok


def test_sender_e2e_option(carepost: Any, workspace: Workspace) -> None:
    common = ["--from-name", "C", "--from-address", "a@clinic.example"]
    common += ["--postal-address", "1 Way", "--organization", "C"]
    r = carepost("sender", "add", "s1", *common, "--e2e", "sometimes", check=False)
    assert r.returncode == 2
    assert "e2e must be one of off, smime, pgp, prefer" in r.stderr
    out = json.loads(carepost("sender", "add", "s1", *common, "--e2e", "pgp", "--json").stdout)
    assert out["e2e"] == "pgp"
