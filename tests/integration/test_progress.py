"""The progress hooks behind the command-line bars, on every database: starting a campaign
reports every evidence and outbox row it writes, and the worker reports every batch. The
bars themselves are hidden when stderr is not a terminal, so the callbacks are what is
checked here."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from carepost.audit.actor import Actor
from carepost.campaigns import service as campaigns
from carepost.content.service import add_template
from carepost.content.template import TemplateSpec
from carepost.db import transaction
from carepost.delivery import machine, outbox
from carepost.delivery.models import OutboxMessage
from carepost.delivery.null import NullTransport
from carepost.delivery.worker import BatchReport, Worker, WorkerConfig
from carepost.segments import service as segments
from carepost.segments.snapshot import build_snapshot
from carepost.workspace import Workspace
from delivery_support import HTML, SENDER, add_contacts, campaign_scenario


def _draft_campaign(ws: Workspace, actor: Actor, contact_ids: list[str]) -> str:
    with transaction(ws.engine) as session:
        segments.save_static_list(session, "audience", contact_ids, actor=actor)
        campaigns.add_sender(
            session,
            sender_id=SENDER,
            from_name="Example Clinic",
            from_address="news@clinic.example",
            postal_address="1 Example Way, Springfield, MA 01101",
            organization_name="Example Clinic",
            actor=actor,
        )
        template = add_template(
            session,
            TemplateSpec("flu", "Flu shots are here", HTML, "treatment", ("first_name",)),
            actor=actor,
        )
        return campaigns.create_campaign(
            session,
            name="Flu 2026",
            segment="audience",
            template_id=template.id,
            sender_id=SENDER,
            topic="flu",
            actor=actor,
        ).id


def test_starting_a_campaign_reports_every_row_it_writes(
    workspace: Workspace, actor: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks, so a handful of contacts spans several of them.
    monkeypatch.setattr(segments, "FREEZE_CHUNK", 7)
    monkeypatch.setattr(outbox, "ENQUEUE_CHUNK", 4)
    ids = add_contacts(workspace, [f"p.{i}@sink.test" for i in range(15)])
    campaign_id = _draft_campaign(workspace, actor, ids)
    snap = build_snapshot(workspace.engine, workspace.keyring, actor=actor)
    frozen: list[int] = []
    queued: list[int] = []
    with transaction(workspace.engine) as session:
        freeze = segments.freeze_membership(
            session,
            segments.get_segment(session, "audience"),
            at=datetime.now(UTC),
            actor=actor,
            campaign_id=campaign_id,
            snapshot=snap,
            progress=frozen.append,
        )
        members = segments.frozen_members(session, freeze.id)
        campaign = campaigns.start_campaign(
            session,
            campaign_id,
            members=members,
            membership_ref=freeze.id,
            actor=actor,
            progress=queued.append,
        )
        recipients = campaign.recipients
    with transaction(workspace.engine) as session:
        rows = session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.campaign_id == campaign_id)
        )
    assert frozen == [7, 7, 1]
    assert sum(frozen) == len(members) == 15
    assert queued == [4, 4, 4, 3]
    assert sum(queued) == recipients == rows == 15


def test_the_worker_reports_every_batch_and_they_add_up(workspace: Workspace, actor: Actor) -> None:
    sc = campaign_scenario(workspace, actor, [f"ok.{i}@sink.test" for i in range(12)], range(8))
    policy = machine.RetryPolicy()
    with transaction(workspace.engine) as session:
        assert outbox.count_due(session, at=datetime.now(UTC), policy=policy) == 12
        # A paused campaign's messages are not due: the count follows what a claim takes.
        campaigns.change_status(session, sc.campaign_id, "pause", actor=actor)
        assert outbox.count_due(session, at=datetime.now(UTC), policy=policy) == 0
        campaigns.change_status(session, sc.campaign_id, "resume", actor=actor)
    worker = Worker(
        workspace.engine,
        workspace.keyring,
        NullTransport(),
        WorkerConfig(public_url="https://mail.clinic.example", batch_size=5),
        name="w1",
    )
    batches: list[BatchReport] = []

    total = worker.run(until_idle=True, on_batch=batches.append)

    assert [b.claimed for b in batches] == [5, 5, 2, 0]  # the last, empty one ends the run
    assert sum(b.claimed for b in batches) == total.claimed == 12
    assert sum(b.denied for b in batches) == total.denied == 4
    assert sum(b.handed_off for b in batches) == total.handed_off == 8
    assert sum((b.results for b in batches), BatchReport().results) == total.results
    assert total.results == {"sent": 8}
    with transaction(workspace.engine) as session:
        assert outbox.count_due(session, at=datetime.now(UTC), policy=policy) == 0
