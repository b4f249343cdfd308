"""The delivery engine end to end: services, the outbox, the worker, the consent gate at
send time, DKIM and evidence, against a real STARTTLS SMTP server, on every database."""

from __future__ import annotations

import email
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

import dkim as dkimpy
import pytest
import zstandard
from sqlalchemy import select

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry
from carepost.campaigns import service as campaigns
from carepost.campaigns.models import Campaign
from carepost.consent import service as consent
from carepost.contacts.models import ContactKey
from carepost.crypto.envelope import aad, open_sealed, unwrap_dek
from carepost.db import transaction
from carepost.delivery import dkim, machine, outbox, timeline
from carepost.delivery.models import (
    ArchivedMessage,
    DeliveryAlert,
    DeliveryAttempt,
    OutboxMessage,
    OutboxTransition,
)
from carepost.delivery.smtp import RelayConfig, SmtpTransport
from carepost.delivery.worker import Worker, WorkerConfig
from carepost.workspace import Workspace
from delivery_support import SENDER, campaign_scenario
from smtp_sink import RELAY_TIMEOUT

PUBLIC = "https://mail.clinic.example"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def _worker(ws: Workspace, sink: Any, clock: Clock, **config: Any) -> Worker:
    relay = RelayConfig(
        sink.host, sink.port, tls_context=sink.client_context, timeout=RELAY_TIMEOUT
    )
    settings = {"public_url": PUBLIC, "batch_size": 5, **config}
    return Worker(
        ws.engine,
        ws.keyring,
        SmtpTransport(relay),
        WorkerConfig(**settings),
        name="w1",
        clock=clock,
        rng=Random(7),
    )


def _states(ws: Workspace, campaign_id: str) -> dict[str, str]:
    with transaction(ws.engine) as s:
        return dict(
            s.execute(
                select(OutboxMessage.contact_id, OutboxMessage.state).where(
                    OutboxMessage.campaign_id == campaign_id
                )
            ).all()
        )


def _timelines(ws: Workspace, campaign_id: str) -> dict[str, list[tuple[str, str | None]]]:
    """Each contact's message timeline as (state, detail), as the evidence report reads it."""
    with transaction(ws.engine) as s:
        rows = s.execute(
            select(OutboxMessage.id, OutboxMessage.contact_id).where(
                OutboxMessage.campaign_id == campaign_id
            )
        ).all()
        return {
            contact: [(state, detail) for state, _, detail in timeline.read(s, oid)]
            for oid, contact in rows
        }


def test_campaign_is_gated_signed_sent_and_evidenced(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any, tmp_path: Path
) -> None:
    key = dkim.generate_key("rsa-sha256")
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(dkim.private_pem(key))
    record = dkim.dns_record_value(key).encode()
    emails = [f"ok.{i}@sink.test" for i in range(12)]
    sc = campaign_scenario(workspace, actor, emails, range(8), dkim_key_file=str(key_file))
    sink = smtp_sink_factory()
    clock = Clock()

    report = _worker(workspace, sink, clock).run()

    assert report.claimed == 12
    assert report.denied == 4
    assert report.results == {"sent": 8}
    states = _states(workspace, sc.campaign_id)
    assert sorted(c for c, s in states.items() if s == "sent") == sorted(sc.authorized)
    assert {s for c, s in states.items() if c not in sc.authorized} == {"denied"}
    with transaction(workspace.engine) as s:
        rows = {o.id: o for o in s.scalars(select(OutboxMessage))}
        attempts = {a.outbox_id: a for a in s.scalars(select(DeliveryAttempt))}
        archive = {a.outbox_id: a for a in s.scalars(select(ArchivedMessage))}
        keys = {k.contact_id: k for k in s.scalars(select(ContactKey))}
        timelines = {oid: [step[0] for step in timeline.read(s, oid)] for oid in rows}
        # The hot path writes only `claimed` as a transition row; the attempt row holds
        # the start and the result (delivery.timeline).
        hot_rows = s.scalars(
            select(OutboxTransition.state).where(
                OutboxTransition.state.in_(("attempt_started", "sent"))
            )
        ).all()
        status = campaigns.campaign_status(s, sc.campaign_id)
    assert status.status == "done"
    assert status.states == {"sent": 8, "denied": 4}
    assert hot_rows == []
    assert sorted(map(tuple, timelines.values())) == sorted(
        [("queued", "claimed", "attempt_started", "sent")] * 8
        + [("queued", "claimed", "denied")] * 4
    )
    assert len(sink.state.received) == 8
    assert all(r.tls for r in sink.state.received)
    for got in sink.state.received:
        assert dkimpy.verify(got.data, dnsfunc=lambda name, timeout=5: record)
        msg = email.message_from_bytes(got.data)
        outbox_id = msg["Message-ID"].strip("<>").split("@")[0]
        assert rows[outbox_id].state == "sent"
        attempt = attempts[outbox_id]
        assert attempt.sha256 == hashlib.sha256(got.data).hexdigest()
        assert attempt.reply.startswith("250 2.0.0 Ok")
        assert attempt.tls_version in ("TLSv1.2", "TLSv1.3")
        assert attempt.dkim is not None
        assert "list-unsubscribe-post" in attempt.dkim
        assert msg["List-Unsubscribe"].startswith(f"<{PUBLIC}/u/")
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert got.rcpt_tos[0] not in (attempt.reply or "")
        html = next(p for p in msg.walk() if p.get_content_type() == "text/html")
        body = html.get_payload(decode=True).decode()
        assert "Dear Pat" in body
        assert f"{PUBLIC}/t/c/{outbox_id}." in body  # tracked, no destination in the URL
        assert "clinic.example/flu" not in body
        # The archive holds exactly these bytes, sealed under the contact's data key.
        k = keys[rows[outbox_id].contact_id]
        cipher_key = unwrap_dek(
            workspace.keyring, bytes(k.wrapped_dek), k.kek_version, k.contact_id
        )
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        packed = open_sealed(
            AESGCM(cipher_key),
            bytes(archive[outbox_id].body),
            aad("message_archive", "body", f"{outbox_id}.1", k.dek_version),
        )
        assert archive[outbox_id].codec == "zstd"
        assert len(packed) < len(got.data)
        assert zstandard.ZstdDecompressor().decompress(packed) == got.data
    with transaction(workspace.engine) as s:
        denied = next(c for c in sc.contact_ids if c not in sc.authorized)
        why = consent.explain(s, contact_id=denied, campaign_id=sc.campaign_id)
    assert why
    assert not why[0]["allowed"]
    assert audit.verify(workspace.engine).ok


def test_fault_matrix_through_the_worker(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    emails = [
        "data-451.1@sink.test",
        "rcpt-550.2@sink.test",
        "data-554.3@sink.test",
        "drop.4@sink.test",
        "ok.5@sink.test",
        "data-552.6@sink.test",
    ]
    sc = campaign_scenario(workspace, actor, emails, range(6))
    sink = smtp_sink_factory()
    clock = Clock()
    policy = machine.RetryPolicy(base_seconds=60, max_attempts=2)
    worker = _worker(workspace, sink, clock, retry=policy)
    worker.run()
    by_email = dict(zip(emails, sc.contact_ids, strict=True))
    first = _states(workspace, sc.campaign_id)
    assert first[by_email["data-451.1@sink.test"]] == "deferred"
    assert first[by_email["rcpt-550.2@sink.test"]] == "failed"
    assert first[by_email["data-554.3@sink.test"]] == "failed"
    assert first[by_email["data-552.6@sink.test"]] == "failed"
    assert first[by_email["drop.4@sink.test"]] == "unknown"
    assert first[by_email["ok.5@sink.test"]] == "sent"
    worker.run()  # nothing is due yet: the backoff holds
    assert _states(workspace, sc.campaign_id) == first
    clock.advance(hours=1)
    worker.run()
    second = _states(workspace, sc.campaign_id)
    assert second[by_email["data-451.1@sink.test"]] == "failed"  # retries exhausted
    assert second[by_email["drop.4@sink.test"]] == "unknown"  # retried once, then left
    dropped = [r for r in sink.state.received if r.rcpt_tos == ["drop.4@sink.test"]]
    assert len(dropped) == 2
    assert dropped[0].data.split(b"\r\n\r\n")[0].count(b"Message-ID") == 1
    ids = {email.message_from_bytes(r.data)["Message-ID"] for r in dropped}
    assert len(ids) == 1  # the retry reuses the Message-ID
    clock.advance(hours=10)
    assert worker.run().claimed == 0  # an unknown is retried once only
    # Every change in order, though the clock stood still through each run: the attempt
    # rows' start and result sit right after the claim they follow.
    timelines = _timelines(workspace, sc.campaign_id)
    assert [st for st, _ in timelines[by_email["data-451.1@sink.test"]]] == [
        "queued",
        "claimed",
        "attempt_started",
        "deferred",
        "claimed",
        "attempt_started",
        "failed",
    ]
    assert timelines[by_email["data-451.1@sink.test"]][-1] == ("failed", "retries_exhausted")
    assert timelines[by_email["drop.4@sink.test"]] == [
        ("queued", None),
        ("claimed", "w1"),
        ("attempt_started", None),
        ("unknown", "lost_after_data"),
        ("claimed", "w1"),
        ("attempt_started", None),
        ("unknown", "unknown_final"),
    ]
    assert [st for st, _ in timelines[by_email["ok.5@sink.test"]]] == [
        "queued",
        "claimed",
        "attempt_started",
        "sent",
    ]
    with transaction(workspace.engine) as s:
        # Only the hard bounce suppressed its address; a policy refusal did not.
        hard = consent.check(
            s,
            contact_id=by_email["rcpt-550.2@sink.test"],
            message_class="treatment",
            channel="email",
            topic="flu",
            sender=SENDER,
            at=clock(),
        )
        policy_refusal = consent.check(
            s,
            contact_id=by_email["data-554.3@sink.test"],
            message_class="treatment",
            channel="email",
            topic="flu",
            sender=SENDER,
            at=clock(),
        )
        status = campaigns.campaign_status(s, sc.campaign_id)
    assert not hard.allowed
    assert policy_refusal.allowed
    assert status.status == "done"


def test_relay_without_tls_gets_nothing_and_raises_an_alert(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    sc = campaign_scenario(workspace, actor, [f"ok.{i}@sink.test" for i in range(3)], range(3))
    sink = smtp_sink_factory("none")
    _worker(workspace, sink, Clock()).run()
    assert set(_states(workspace, sc.campaign_id).values()) == {"deferred"}
    assert sink.state.mail_commands == []
    assert sink.state.received == []
    with transaction(workspace.engine) as s:
        alerts = s.scalars(select(DeliveryAlert)).all()
    assert [(a.kind, a.count) for a in alerts] == [("tls_unavailable", 3)]


def test_revocation_mid_campaign_stops_unsent_messages(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    emails = [f"ok.{i}@sink.test" for i in range(10)]
    sc = campaign_scenario(workspace, actor, emails, range(10))
    sink = smtp_sink_factory()
    clock = Clock()
    worker = _worker(workspace, sink, clock, batch_size=4)
    worker.run_batch()
    states = _states(workspace, sc.campaign_id)
    waiting = [c for c in sc.contact_ids if states[c] == "queued"]
    assert len(waiting) == 6
    revoked = waiting[-1]
    with transaction(workspace.engine) as s:
        consent.revoke_authorization(
            s, authorization_id=sc.authorization_ids[revoked], source="staff", actor=actor
        )
    clock.advance(seconds=1)
    worker.run()
    final = _states(workspace, sc.campaign_id)
    assert final[revoked] == "denied"
    assert sum(1 for s in final.values() if s == "sent") == 9
    assert all(r.rcpt_tos != [emails[sc.contact_ids.index(revoked)]] for r in sink.state.received)


def test_pause_holds_the_queue_and_resume_releases_it(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    sc = campaign_scenario(workspace, actor, [f"ok.{i}@sink.test" for i in range(4)], range(4))
    sink = smtp_sink_factory()
    worker = _worker(workspace, sink, Clock())
    with transaction(workspace.engine) as s:
        campaigns.change_status(s, sc.campaign_id, "pause", actor=actor)
    assert worker.run().claimed == 0
    with transaction(workspace.engine) as s:
        campaigns.change_status(s, sc.campaign_id, "resume", actor=actor)
        with pytest.raises(campaigns.CampaignError):
            campaigns.change_status(s, sc.campaign_id, "resume", actor=actor)
    assert worker.run().results == {"sent": 4}


class Died(Exception):
    pass


def test_a_worker_dying_after_handoff_loses_nothing(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    emails = [f"ok.{i}@sink.test" for i in range(6)]
    sc = campaign_scenario(workspace, actor, emails, range(6))
    sink = smtp_sink_factory()
    clock = Clock()

    def die() -> None:
        raise Died

    dying = _worker(workspace, sink, clock, batch_size=3)
    dying._on_handoff = die
    with pytest.raises(Died):
        dying.run_batch()
    states = _states(workspace, sc.campaign_id)
    assert sorted(states.values()) == ["attempt_started"] * 3 + ["queued"] * 3
    survivor = _worker(workspace, sink, clock, batch_size=10)
    survivor.name = "w2"
    survivor.run()  # the live lease keeps the dead worker's rows untouched
    assert sorted(_states(workspace, sc.campaign_id).values()) == (
        ["attempt_started"] * 3 + ["sent"] * 3
    )
    clock.advance(minutes=6)  # past the 5-minute lease
    clock_after = clock.now
    survivor.run()  # expired: attempt_started -> unknown -> retried once, same Message-ID
    clock.advance(minutes=5)
    survivor.run()
    assert clock_after
    assert set(_states(workspace, sc.campaign_id).values()) == {"sent"}
    assert sorted(r.rcpt_tos[0] for r in sink.state.received) == sorted(emails)
    # The dead worker's attempt never got a result: its lease's expiry follows its start.
    assert sorted(_timelines(workspace, sc.campaign_id).values()) == sorted(
        [
            [
                ("queued", None),
                ("claimed", "w1"),
                ("attempt_started", None),
                ("unknown", outbox.LEASE_EXPIRED),
                ("claimed", "w2"),
                ("attempt_started", None),
                ("sent", "accepted"),
            ]
        ]
        * 3
        + [[("queued", None), ("claimed", "w2"), ("attempt_started", None), ("sent", "accepted")]]
        * 3
    )


def test_rate_limit_caps_claims_per_minute(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    sc = campaign_scenario(workspace, actor, [f"ok.{i}@sink.test" for i in range(12)], range(12))
    with transaction(workspace.engine) as s:
        campaign = s.get(Campaign, sc.campaign_id)
        assert campaign is not None
        campaign.rate_per_minute = 5
    sink = smtp_sink_factory()
    clock = Clock()
    worker = _worker(workspace, sink, clock, batch_size=50)
    assert worker.run().claimed == 5
    clock.advance(seconds=30)
    assert worker.run().claimed == 0  # still the same minute
    clock.advance(seconds=31)
    assert worker.run().claimed == 5
    clock.advance(minutes=1, seconds=1)
    assert worker.run().claimed == 2
    assert len(sink.state.received) == 12


def test_a_preparing_worker_does_not_hold_the_audit_chain(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: while one worker composes a batch (its gate run and PHI read already
    audited), another transaction appends to the audit chain and commits without waiting;
    a prepare that held the chain's head lock made every other worker's prepare queue
    behind it. SQLite serialises write transactions with its one write lock anyway."""
    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises write transactions with its one write lock")
    from sqlalchemy import text

    from carepost.delivery import worker as worker_module

    sc = campaign_scenario(workspace, actor, [f"ok.{i}@sink.test" for i in range(3)], range(3))
    appended: list[int | None] = []
    real_compose = worker_module.compose

    def compose_after_another_append(*args: Any, **kwargs: Any) -> Any:
        if not appended:
            with transaction(workspace.engine) as other:
                other.execute(text("SET LOCAL lock_timeout = '2s'"))
                appended.append(audit.append(other, actor=actor, action="test.meanwhile").seq)
        return real_compose(*args, **kwargs)

    monkeypatch.setattr(worker_module, "compose", compose_after_another_append)
    report = _worker(workspace, smtp_sink_factory(), Clock()).run()

    assert report.results == {"sent": 3}
    assert appended
    assert appended[0] is not None
    assert _states(workspace, sc.campaign_id) == dict.fromkeys(sc.contact_ids, "sent")
    with transaction(workspace.engine) as s:
        actions = s.scalars(select(AuditEntry.action).order_by(AuditEntry.seq)).all()
    # The batch's entries follow the one committed meanwhile: they were linked at its end.
    assert actions.index("test.meanwhile") < actions.index("delivery.phi_read")
    assert audit.verify(workspace.engine).ok
