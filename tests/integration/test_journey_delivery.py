"""Journey messages go out through the real delivery worker (gate at claim, SMTP to a
real STARTTLS server) and the worker never closes a journey's hidden campaign."""

from __future__ import annotations

from random import Random
from typing import Any

from sqlalchemy import select

from carepost.audit.actor import Actor
from carepost.campaigns.models import Campaign
from carepost.db import transaction
from carepost.delivery.models import OutboxMessage
from carepost.delivery.smtp import RelayConfig, SmtpTransport
from carepost.delivery.worker import Worker, WorkerConfig
from carepost.journeys import events
from carepost.journeys.engine import JourneyEngine
from carepost.workspace import Workspace
from journey_support import StepClock, publish, setup
from smtp_sink import RELAY_TIMEOUT


def test_journey_sends_are_delivered_and_campaign_stays_open(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 3)
    publish(workspace, actor, "lab-result", clock)
    for c in ids:
        with transaction(workspace.engine) as session:
            events.do_send_event(session, "lab_result_available", c, {}, actor=actor, clock=clock)
    JourneyEngine(workspace.engine, clock).run_until_idle()
    sink = smtp_sink_factory()
    relay = RelayConfig(
        sink.host, sink.port, tls_context=sink.client_context, timeout=RELAY_TIMEOUT
    )
    worker = Worker(
        workspace.engine,
        workspace.keyring,
        SmtpTransport(relay),
        WorkerConfig(public_url="https://mail.clinic.example", batch_size=5),
        name="w1",
        clock=clock,
        rng=Random(7),
    )
    report = worker.run()
    assert report.claimed == 3
    assert report.results == {"sent": 3}
    assert len(sink.state.message_ids()) == 3
    with transaction(workspace.engine) as session:
        assert set(session.scalars(select(OutboxMessage.state))) == {"sent"}
        kinds = session.execute(select(Campaign.kind, Campaign.status)).all()
    # Every message of the step is final, and its campaign still takes the next ones.
    assert set(kinds) == {("journey", "running")}
