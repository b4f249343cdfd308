"""One-off messages (issue 9) through the real services, gate, outbox, worker and a real
STARTTLS SMTP server, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import threading
import time
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any

import pytest
from sqlalchemy import select

from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry
from carepost.campaigns.models import Campaign
from carepost.consent import service as consent
from carepost.content.service import add_template
from carepost.content.template import TemplateSpec
from carepost.db import transaction
from carepost.delivery import machine, outbox
from carepost.delivery.evidence import evidence
from carepost.delivery.models import OutboxMessage
from carepost.messages.data import DataRejected
from carepost.messages.models import MessageData
from carepost.messages.service import MessageError, message_status
from carepost.staff.principal import PermissionDenied, Principal
from carepost.workspace import Workspace
from delivery_support import campaign_scenario
from message_support import LAB_FIELDS, LAB_HTML, send, setup_one_off, worker_for

SECRET = "HbA1c-9931-marker"
REFERENCE = "REF-4471-marker"


def _text_of(raw: bytes) -> str:
    parsed = email.message_from_bytes(raw)
    parts: list[str] = []
    for part in parsed.walk():
        if part.get_content_type() in ("text/plain", "text/html"):
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            parts.append(payload.decode(part.get_content_charset() or "utf-8"))
    return "\n".join(parts)


def _headers(raw: bytes) -> Message:
    return email.message_from_bytes(raw)


def _rows(ws: Workspace) -> list[OutboxMessage]:
    with transaction(ws.engine) as session:
        return list(session.scalars(select(OutboxMessage)))


def test_one_off_goes_through_gate_and_outbox_with_data_rendered(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    ids = setup_one_off(workspace, actor, ["pat@patients.example", "kim@patients.example"])
    sent = send(workspace, actor, ids[0], {"test_name": SECRET, "reference": REFERENCE})
    second = send(workspace, actor, ids[1], {"test_name": "lipid panel", "reference": 7})
    assert sent.status == "queued"
    # One hidden campaign serves both: same template, sender, class and topic.
    assert second.campaign_id == sent.campaign_id
    sink = smtp_sink_factory()
    report = worker_for(workspace, sink).run()
    assert report.results == {"sent": 2}
    by_id = {_headers(r.data)["Message-ID"]: r.data for r in sink.state.received}
    raw = by_id[f"<{sent.id}@clinic.example>"]
    body = _text_of(raw)
    assert SECRET in body
    assert REFERENCE in body
    assert "Pat0" in body
    assert SECRET not in str(_headers(raw)["Subject"])
    assert "lipid panel" in _text_of(by_id[f"<{second.id}@clinic.example>"])
    with transaction(workspace.engine) as session:
        campaign = session.get(Campaign, sent.campaign_id)
        assert campaign is not None
        # The worker never closes a one-off campaign: the next message reuses it.
        assert (campaign.kind, campaign.status) == ("one_off", "running")
        proof = evidence(session, sent.id)
        status = message_status(session, principal=Principal.system(actor), message_id=sent.id)
        queued = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "messages.queued")
        ).all()
        reads = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "delivery.phi_read")
        ).all()
    assert proof["state"] == "sent"
    assert [d["allowed"] for d in proof["consent_decisions"]] == [True]
    assert status.status == "sent"
    assert [s for s, _ in status.timeline] == ["queued", "claimed", "attempt_started", "sent"]
    assert len(queued) == 2
    assert all(SECRET not in e.details and REFERENCE not in e.details for e in queued)
    # The worker's one audited read names the messages whose data it opened.
    assert any(sent.id in e.details for e in reads)


def test_undeclared_or_missing_key_refused_naming_the_key(
    workspace: Workspace, actor: Actor
) -> None:
    ids = setup_one_off(workspace, actor, ["pat@patients.example"])
    with pytest.raises(DataRejected) as info:
        send(
            workspace,
            actor,
            ids[0],
            {"test_name": "x", "reference": "y", "diagnosis": SECRET},
        )
    assert info.value.problems[0][0] == "diagnosis"
    assert SECRET not in str(info.value)
    with pytest.raises(DataRejected, match=r"data\.reference: missing"):
        send(workspace, actor, ids[0], {"test_name": SECRET})
    # Nothing half-written: no outbox row, no hidden campaign.
    assert _rows(workspace) == []
    with transaction(workspace.engine) as session:
        assert session.scalars(select(Campaign)).all() == []


def test_marketing_and_mismatched_class_refused(workspace: Workspace, actor: Actor) -> None:
    ids = setup_one_off(workspace, actor, ["pat@patients.example"])
    data = {"test_name": "x", "reference": "y"}
    with pytest.raises(MessageError, match="marketing goes by a campaign"):
        send(workspace, actor, ids[0], data, message_class="marketing")
    with pytest.raises(MessageError, match="is of class treatment"):
        send(workspace, actor, ids[0], data, message_class="transactional")
    with pytest.raises(MessageError, match="no such contact") as info:
        send(workspace, actor, "f" * 32, data)
    assert info.value.status == 404
    with pytest.raises(MessageError, match="no template"):
        send(workspace, actor, ids[0], data, template="no-such-template")
    assert _rows(workspace) == []


def test_permission_refused_without_messages_send(workspace: Workspace, actor: Actor) -> None:
    ids = setup_one_off(workspace, actor, ["pat@patients.example"])
    marketer = Principal("user", actor, frozenset({"campaigns:write", "templates:read"}))
    with pytest.raises(PermissionDenied, match="messages:send"):
        send(workspace, actor, ids[0], {"test_name": "x", "reference": "y"}, principal=marketer)
    assert _rows(workspace) == []


def test_suppressed_contact_denied_by_the_gate(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    ids = setup_one_off(workspace, actor, ["gone@patients.example"])
    with transaction(workspace.engine) as session:
        consent.add_suppression(
            session,
            channel="email",
            address_bis=[consent.address_bi(workspace.keyring, "email", "gone@patients.example")],
            reason="hard_bounce",
            source="staff",
            contact_id=ids[0],
            actor=actor,
        )
    sent = send(workspace, actor, ids[0], {"test_name": SECRET, "reference": "r"})
    sink = smtp_sink_factory()
    report = worker_for(workspace, sink).run()
    assert report.denied == 1
    assert sink.state.received == []
    with transaction(workspace.engine) as session:
        proof = evidence(session, sent.id)
    assert proof["state"] == "denied"
    assert proof["consent_decisions"][0]["allowed"] is False
    assert "suppressed" in " ".join(proof["consent_decisions"][0]["reasons"])


def _campaign_and_lab_template(workspace: Workspace, actor: Actor) -> Any:
    scenario = campaign_scenario(
        workspace, actor, [f"p{i}@patients.example" for i in range(6)], range(6)
    )
    with transaction(workspace.engine) as session:
        add_template(
            session,
            TemplateSpec("lab-result", "Your results are ready", LAB_HTML, "treatment", LAB_FIELDS),
            actor=actor,
        )
    return scenario


def test_lane_zero_claimed_alone_before_queued_campaign_rows(
    workspace: Workspace, actor: Actor
) -> None:
    scenario = _campaign_and_lab_template(workspace, actor)
    # Queued after the campaign's rows, and later in time: still first.
    sent = send(workspace, actor, scenario.contact_ids[2], {"test_name": "a", "reference": "b"})
    policy = machine.RetryPolicy()
    at = datetime.now(UTC) + timedelta(seconds=1)
    with transaction(workspace.engine) as session:
        assert outbox.lane_due(session, lane=outbox.LANE_ONE_OFF, at=at)
        first = outbox.claim(
            session, worker="w1", at=at, limit=50, lease=timedelta(minutes=1), policy=policy
        )
    assert [c.id for c in first] == [sent.id]
    with transaction(workspace.engine) as session:
        assert not outbox.lane_due(session, lane=outbox.LANE_ONE_OFF, at=at)
        second = outbox.claim(
            session, worker="w1", at=at, limit=50, lease=timedelta(minutes=1), policy=policy
        )
    assert {c.campaign_id for c in second} == {scenario.campaign_id}
    assert len(second) == 6


def test_sealed_data_not_readable_in_the_database(workspace: Workspace, actor: Actor) -> None:
    ids = setup_one_off(workspace, actor, ["pat@patients.example"])
    sent = send(workspace, actor, ids[0], {"test_name": SECRET, "reference": REFERENCE})
    marker = SECRET.encode()
    with transaction(workspace.engine) as session:
        blob = session.scalar(select(MessageData.body).where(MessageData.outbox_id == sent.id))
        dumped = [
            repr(tuple(row))
            for table in ("outbox", "outbox_transitions", "campaigns", "audit_log")
            for row in session.execute(select(_table(table)))
        ]
    assert blob is not None
    assert marker not in bytes(blob)
    assert not any(SECRET in text or REFERENCE in text for text in dumped)
    if workspace.engine.dialect.name == "sqlite":
        workspace.engine.dispose()
        folder = workspace.settings.data_dir
        for path in folder.glob("carepost.db*"):
            assert marker not in path.read_bytes(), path.name


def _table(name: str) -> Any:
    from carepost.models import metadata

    return metadata.tables[name]


def test_idle_worker_picks_up_a_one_off_message_within_its_poll(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    ids = setup_one_off(workspace, actor, ["pat@patients.example"])
    sink = smtp_sink_factory()
    worker = worker_for(workspace, sink)
    done = threading.Event()
    thread = threading.Thread(
        target=lambda: worker.run(until_idle=False, idle_sleep=30.0, stop=done.is_set),
        daemon=True,
    )
    thread.start()
    try:
        time.sleep(0.5)  # the worker found nothing and is idle for 30 s
        started = time.monotonic()
        send(workspace, actor, ids[0], {"test_name": "x", "reference": "y"})
        while not sink.state.received and time.monotonic() - started < 10:
            time.sleep(0.01)
        waited = time.monotonic() - started
    finally:
        done.set()
    assert sink.state.received, "the idle worker never sent the one-off message"
    assert waited < 2.0, waited
    # `stop` is checked after each idle interval; the express poll returns only for work.
    send(workspace, actor, ids[0], {"test_name": "x", "reference": "y"})
    thread.join(10)
    assert not thread.is_alive()


def test_one_off_cuts_in_between_parts_of_a_campaign_batch(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    scenario = _campaign_and_lab_template(workspace, actor)
    first = send(workspace, actor, scenario.contact_ids[0], {"test_name": "a", "reference": "b"})
    sink = smtp_sink_factory()
    late: list[str] = []
    armed: list[bool] = []

    def arrive_mid_batch() -> None:
        # Called before each part is sent: the first time, a one-off message comes in.
        if armed and not late:
            late.append(
                send(
                    workspace, actor, scenario.contact_ids[1], {"test_name": "c", "reference": 1}
                ).id
            )

    worker = worker_for(workspace, sink, batch_size=6, sub_batch=2, on_handoff=arrive_mid_batch)
    # The first batch is the one-off message alone; the worker now expects more of them.
    assert worker.run_batch().claimed == 1
    armed.append(True)
    report = worker.run_batch()
    assert report.claimed == 7
    order = [m.strip("<>").split("@")[0] for m in sink.state.message_ids()]
    assert order[0] == first.id
    # After the campaign's first part of two, before its other four.
    assert order.index(late[0]) == 3
    assert len(order) == 8


def test_a_campaign_alone_is_handled_in_whole_batches(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    campaign_scenario(workspace, actor, [f"p{i}@patients.example" for i in range(6)], range(6))
    handoffs: list[int] = []
    worker = worker_for(
        workspace,
        smtp_sink_factory(),
        batch_size=6,
        sub_batch=2,
        on_handoff=lambda: handoffs.append(1),
    )
    assert worker.run_batch().results == {"sent": 6}
    assert len(handoffs) == 1  # one part: no one-off traffic to make room for


def test_evidence_of_each_message_has_its_own_gate_decision(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    ids = setup_one_off(workspace, actor, ["pat@patients.example"])
    sink = smtp_sink_factory()
    first = send(workspace, actor, ids[0], {"test_name": "a", "reference": "b"})
    worker_for(workspace, sink).run()
    with transaction(workspace.engine) as session:
        consent.set_consent(
            session,
            contact_id=ids[0],
            channel="email",
            topic="treatment",
            status="opted_out",
            source="staff",
            actor=actor,
        )
    second = send(workspace, actor, ids[0], {"test_name": "c", "reference": "d"})
    worker_for(workspace, sink).run()
    with transaction(workspace.engine) as session:
        proofs = [evidence(session, m.id) for m in (first, second)]
    assert [p["state"] for p in proofs] == ["sent", "denied"]
    assert [[d["allowed"] for d in p["consent_decisions"]] for p in proofs] == [[True], [False]]
