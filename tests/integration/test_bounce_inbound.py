"""Inbound bounces and complaints end to end, on every database: a campaign goes out
through the worker to a real SMTP sink with VERP return paths; real DSN and ARF messages
from the shared corpus, rewritten to point at those messages, come back over real SMTP
(STARTTLS) into the bounce listener; the suppressions, opt-outs, rates and the 0.3% alert
follow."""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from random import Random
from typing import Any

import pytest
from sqlalchemy import func, select

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry
from carepost.bounces.listener import BounceDomains, BounceListener, server_context
from carepost.bounces.models import BounceEvent, BounceUnlinked, ComplaintAlert
from carepost.bounces.rates import RatePolicy
from carepost.bounces.verp import VerpSigner
from carepost.consent import service as consent
from carepost.consent.models import Suppression
from carepost.db import transaction
from carepost.delivery.capture import client_context, ensure_tls
from carepost.delivery.models import DeliveryAlert, DeliveryAttempt, OutboxMessage
from carepost.delivery.smtp import RelayConfig, SmtpTransport
from carepost.delivery.worker import Worker, WorkerConfig
from carepost.workspace import Workspace
from cli_runner import CarepostCli
from conftest import shared_data
from delivery_support import SENDER, campaign_scenario
from smtp_sink import RELAY_TIMEOUT, free_port

EMAILS = [f"ok.{i}@sink.test" for i in range(4)]
VERP_RE = re.compile(r"^bounces\+[0-9a-f]{32}-[0-9a-f]{16}@clinic\.example$")


@dataclass
class Sent:
    contact_id: str
    email: str
    outbox_id: str
    mail_from: str
    message_id: str


@dataclass
class World:
    campaign_id: str
    sent: list[Sent]
    folder: Path


@pytest.fixture
def world(workspace: Workspace, actor: Actor, smtp_sink_factory: Any) -> World:
    sc = campaign_scenario(workspace, actor, EMAILS, range(len(EMAILS)))
    sink = smtp_sink_factory()
    relay = RelayConfig(
        sink.host, sink.port, tls_context=sink.client_context, timeout=RELAY_TIMEOUT
    )
    worker = Worker(
        workspace.engine,
        workspace.keyring,
        SmtpTransport(relay),
        WorkerConfig(public_url="https://mail.clinic.example", batch_size=10),
        name="w1",
        rng=Random(3),
    )
    assert worker.run().results == {"sent": len(EMAILS)}
    by_rcpt = {r.rcpt_tos[0]: r for r in sink.state.received}
    sent = []
    with transaction(workspace.engine) as s:
        rows = s.execute(
            select(OutboxMessage.id, OutboxMessage.contact_id, DeliveryAttempt.message_id).join(
                DeliveryAttempt, DeliveryAttempt.outbox_id == OutboxMessage.id
            )
        ).all()
    email_of = dict(zip(sc.contact_ids, EMAILS, strict=True))
    for outbox_id, contact_id, message_id in rows:
        received = by_rcpt[email_of[contact_id]]
        sent.append(
            Sent(contact_id, email_of[contact_id], outbox_id, received.mail_from, message_id)
        )
    sent.sort(key=lambda x: x.email)
    return World(sc.campaign_id, sent, shared_data("bounce-emails"))


@pytest.fixture
def listener_factory(workspace: Workspace, tmp_path: Path) -> Any:
    started: list[BounceListener] = []
    files = ensure_tls(tmp_path / "bounce-tls")

    def start(policy: RatePolicy | None = None) -> BounceListener:
        listener = BounceListener(
            workspace.engine,
            workspace.keyring,
            host="127.0.0.1",
            port=free_port(),
            tls_context=server_context(files.cert, files.key),
            domains=BounceDomains(workspace.engine),  # the sender profiles' return paths
            max_bytes=1024 * 1024,
            policy=policy,
        )
        listener.start()
        listener.client_context = client_context(files)  # type: ignore[attr-defined]
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


def deliver(listener: BounceListener, rcpt: str, data: bytes) -> tuple[int, bytes]:
    """Over SMTP with STARTTLS, from the null sender, as an MTA returns a bounce."""
    with smtplib.SMTP(listener.host, listener.port, timeout=10) as smtp:
        smtp.starttls(context=listener.client_context)  # type: ignore[attr-defined]
        smtp.ehlo()
        smtp.mail("")
        code, _ = smtp.rcpt(rcpt)
        assert code == 250, rcpt
        # The corpus files have LF line ends (as stored by sisimai); SMTP carries CRLF.
        return smtp.data(re.sub(rb"\r?\n", b"\r\n", data))


def hard_dsn(world: World, recipient: str, message_id: str = "<none@none.example>") -> bytes:
    """Postfix's DSN for a 5.1.1 (sisimai's lhost-postfix-04), its failed recipient and
    the returned original's Message-ID replaced with ours."""
    data = (world.folder / "lhost-postfix-04.eml").read_bytes()
    data = data.replace(b"kijitora@example.co.jp", recipient.encode())
    return data.replace(
        b"<A8F82EDD-E518-4F5C-8C70-BC4EFF24AB9F@example.ne.jp>", message_id.encode()
    )


def complaint(world: World, target: Sent) -> bytes:
    """Yahoo's ARF abuse report (sisimai's arf-02) about our message to `target`."""
    data = (world.folder / "arf-02.eml").read_bytes()
    data = data.replace(b"this-local-part-does-not-exist-on-yahoo@yahoo.com", target.email.encode())
    return data.replace(b"<000000000000000000000000.smtp@example.com>", target.message_id.encode())


def events(ws: Workspace) -> list[BounceEvent]:
    with transaction(ws.engine) as s:
        return list(s.scalars(select(BounceEvent).order_by(BounceEvent.received_at)))


def suppressions(ws: Workspace) -> list[Suppression]:
    with transaction(ws.engine) as s:
        return list(s.scalars(select(Suppression)))


def decision(ws: Workspace, contact_id: str) -> Any:
    with transaction(ws.engine) as s:
        return consent.check(
            s,
            contact_id=contact_id,
            message_class="marketing",
            channel="email",
            topic="flu",
            sender=SENDER,
            at=datetime.now(UTC),
        )


def test_messages_leave_with_verp_return_paths(workspace: Workspace, world: World) -> None:
    signer = VerpSigner(workspace.keyring)
    for sent in world.sent:
        assert VERP_RE.match(sent.mail_from), sent.mail_from
        assert signer.verify(sent.mail_from).outbox_id == sent.outbox_id
        assert sent.outbox_id in sent.message_id
    assert len({s.mail_from for s in world.sent}) == len(world.sent)


def test_hard_bounce_to_verp_suppresses_and_the_gate_denies(
    workspace: Workspace, world: World, listener_factory: Any
) -> None:
    target = world.sent[0]
    assert decision(workspace, target.contact_id).allowed
    listener = listener_factory()

    code, _ = deliver(listener, target.mail_from, hard_dsn(world, target.email))

    assert code == 250
    [event] = events(workspace)
    assert (event.outbox_id, event.campaign_id) == (target.outbox_id, world.campaign_id)
    assert (event.category, event.action, event.linked_by) == ("bounce-hard", "suppressed", "verp")
    assert event.sending_domain == "clinic.example"
    assert event.recipients == "5.1.1:hard"
    # No address and no content in what is kept: the row's every value, as text.
    row_text = " ".join(str(v) for v in vars(event).values())
    assert "@" not in row_text
    assert "sink.test" not in row_text
    [sup] = suppressions(workspace)
    assert (sup.reason, sup.evidence_ref) == ("hard_bounce", f"bounce:{event.id}")
    assert sup.address_bi == consent.address_bi(workspace.keyring, "email", target.email)
    denied = decision(workspace, target.contact_id)
    assert not denied.allowed
    assert "suppressed_hard_bounce" in denied.reasons
    assert decision(workspace, world.sent[1].contact_id).allowed
    with transaction(workspace.engine) as s:
        entries = s.scalars(select(AuditEntry).where(AuditEntry.action == "bounce.recorded")).all()
        assert len(entries) == 1
    assert audit.verify(workspace.engine).ok


def test_hard_bounce_for_another_address_suppresses_nothing(
    workspace: Workspace, world: World, listener_factory: Any
) -> None:
    target = world.sent[1]
    listener = listener_factory()
    deliver(listener, target.mail_from, hard_dsn(world, "someone.else@elsewhere.example"))
    [event] = events(workspace)
    assert (event.action, event.note) == ("recorded", "recipient_not_contact")
    assert suppressions(workspace) == []
    assert decision(workspace, target.contact_id).allowed


def test_forged_verp_mac_has_no_effect(
    workspace: Workspace, world: World, listener_factory: Any
) -> None:
    target = world.sent[0]
    local, domain = target.mail_from.split("@")
    forged = f"{local[:-4]}{'0000' if local[-4:] != '0000' else '1111'}@{domain}"
    listener = listener_factory()
    # Even with the real Message-ID quoted inside: a bad tag is a forgery, no fallback.
    code, _ = deliver(listener, forged, hard_dsn(world, target.email, target.message_id))
    assert code == 250
    assert events(workspace) == []
    assert suppressions(workspace) == []
    with transaction(workspace.engine) as s:
        assert s.scalars(select(BounceUnlinked.reason)).all() == ["forged_verp"]
    assert listener.stats.snapshot() == {"unlinked:forged_verp": 1}
    assert decision(workspace, target.contact_id).allowed


def test_message_id_fallback_and_duplicates_are_idempotent(
    workspace: Workspace, world: World, listener_factory: Any
) -> None:
    target = world.sent[2]
    listener = listener_factory()
    data = hard_dsn(world, target.email, target.message_id)

    for _ in range(2):  # the reporting MTA delivers the same DSN twice
        assert deliver(listener, "bounces@clinic.example", data)[0] == 250

    [event] = events(workspace)
    assert (event.outbox_id, event.linked_by, event.action) == (
        target.outbox_id,
        "message_id",
        "suppressed",
    )
    assert len(suppressions(workspace)) == 1
    assert listener.stats.snapshot() == {"recorded": 1, "duplicate": 1}
    # A bounce that names no message of ours is counted and dropped.
    deliver(listener, "bounces@clinic.example", hard_dsn(world, target.email))
    with transaction(workspace.engine) as s:
        assert s.scalars(select(BounceUnlinked.reason)).all() == ["no_reference"]
    assert len(events(workspace)) == 1


def test_complaint_suppresses_and_opts_out_but_auth_failure_does_not(
    workspace: Workspace, world: World, listener_factory: Any
) -> None:
    target, other = world.sent[0], world.sent[3]
    listener = listener_factory()

    deliver(listener, "fbl@clinic.example", complaint(world, target))
    dmarc = (world.folder / "arf-18.eml").read_bytes()
    dmarc = dmarc.replace(
        b"<000000002.2222222.1500000000022@example.net>", other.message_id.encode()
    )
    deliver(listener, "fbl@clinic.example", dmarc)

    first, second = events(workspace)
    assert (first.category, first.feedback_type, first.action) == (
        "complaint",
        "abuse",
        "suppressed_opted_out",
    )
    assert (second.category, second.feedback_type, second.action, second.note) == (
        "complaint",
        "auth-failure",
        "recorded",
        "not_a_person:auth-failure",
    )
    [sup] = suppressions(workspace)
    assert (sup.reason, sup.source) == ("spam_complaint", "complaint")
    with transaction(workspace.engine) as s:
        history = consent.consent_history(s, target.contact_id)
        assert [(h.topic, h.status, h.source) for h in history][-1] == (
            "flu",
            "opted_out",
            "complaint",
        )
        assert all(h.source != "complaint" for h in consent.consent_history(s, other.contact_id))
    denied = decision(workspace, target.contact_id)
    assert "suppressed_spam_complaint" in denied.reasons
    assert decision(workspace, other.contact_id).allowed


def test_complaint_rate_alert_is_raised_once_per_crossing(
    workspace: Workspace, world: World, listener_factory: Any
) -> None:
    # Four delivered; a minimum of 4 so the rate counts (the default is 1,000: rates.py).
    listener = listener_factory(RatePolicy(min_delivered=4))
    deliver(listener, "fbl@clinic.example", complaint(world, world.sent[0]))
    deliver(listener, "fbl@clinic.example", complaint(world, world.sent[1]))
    deliver(listener, world.sent[2].mail_from, hard_dsn(world, world.sent[2].email))

    with transaction(workspace.engine) as s:
        alerts = s.scalars(
            select(DeliveryAlert).where(DeliveryAlert.kind == "complaint_rate")
        ).all()
        scopes = s.execute(select(ComplaintAlert.scope, ComplaintAlert.scope_key)).all()
    # One for the campaign, one for the sending domain: not one per complaint.
    assert len(alerts) == 2
    assert sorted(scopes) == [("campaign", world.campaign_id), ("domain", "clinic.example")]
    assert all("25.00%" in a.detail and "@" not in a.detail for a in alerts)
    # The second complaint kept the alert open and raised nothing new.
    assert {a.count for a in alerts} == {1}


def test_rates_below_the_minimum_volume_raise_nothing(
    workspace: Workspace, world: World, listener_factory: Any
) -> None:
    listener = listener_factory()  # the default minimum: 1,000 delivered
    deliver(listener, "fbl@clinic.example", complaint(world, world.sent[0]))
    with transaction(workspace.engine) as s:
        assert s.scalar(select(func.count()).select_from(DeliveryAlert)) == 0


def test_cli_rates_and_listen_with_json(
    workspace: Workspace, world: World, carepost: CarepostCli, tmp_path: Path
) -> None:
    port = free_port()
    carepost.env["CAREPOST_BOUNCE_PORT"] = str(port)
    carepost.env["CAREPOST_BOUNCE_COMPLAINT_MIN_DELIVERED"] = "2"
    proc = subprocess.Popen(
        [sys.executable, "-m", "carepost.cli", "bounce", "listen", "--json"],
        env=carepost.env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        assert started == {"listening": f"127.0.0.1:{port}", "starttls": True}
        ctx = client_context(ensure_tls(workspace.settings.data_dir / "capture"))
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.starttls(context=ctx)
            data = re.sub(rb"\r?\n", b"\r\n", complaint(world, world.sent[0]))
            smtp.sendmail("", ["fbl@clinic.example"], data)
            smtp.mail("")
            code, _ = smtp.rcpt("someone@not-ours.example")
            assert code == 550  # only the bounce domains
        line = json.loads(proc.stdout.readline())
        assert line["status"] == "recorded"
        assert line["category"] == "complaint"
        assert line["action"] == "suppressed_opted_out"
        assert len(line["alerts"]) == 2
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {
        "stopped": True,
        "counts": {"recorded": 1},
    }
    assert "sink.test" not in out + err

    run = carepost("bounce", "rates", "--json")
    doc = json.loads(run.stdout)
    [campaign] = doc["campaigns"]
    assert (campaign["key"], campaign["sent"], campaign["complaints"]) == (world.campaign_id, 4, 1)
    assert campaign["complaint_rate"] == 0.25
    assert campaign["over_limit"]
    assert campaign["alert_open"]
    [domain] = doc["domains"]
    assert (domain["key"], domain["sent"], domain["complaints"]) == ("clinic.example", 4, 1)
    one = json.loads(carepost("bounce", "rates", "--campaign", world.campaign_id, "--json").stdout)
    assert one["campaigns"] == [campaign]
    text = carepost("bounce", "rates", "--domain", "clinic.example").stdout
    assert "domain clinic.example: sent 4" in text
    assert "OVER LIMIT" in text
    missing = carepost("bounce", "rates", "--campaign", "nope", check=False)
    assert missing.returncode == 1
    assert "no campaign with id 'nope'" in missing.stderr
