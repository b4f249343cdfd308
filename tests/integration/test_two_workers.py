"""Two workers against one database: no message is claimed twice while its lease is
live (SKIP LOCKED on PostgreSQL, the single write lock on SQLite)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from sqlalchemy import select

from carepost.audit.actor import Actor
from carepost.db import transaction
from carepost.delivery.models import OutboxMessage, OutboxTransition
from carepost.delivery.null import NullTransport
from carepost.delivery.worker import Worker, WorkerConfig
from carepost.workspace import Workspace
from delivery_support import campaign_scenario


def test_two_workers_never_share_a_message(workspace: Workspace, actor: Actor) -> None:
    n = 600
    campaign_scenario(
        workspace, actor, [f"ok.{i}@sink.test" for i in range(n)], (), message_class="treatment"
    )
    transports = [NullTransport(), NullTransport()]
    workers = [
        Worker(
            workspace.engine,
            workspace.keyring,
            t,
            WorkerConfig(public_url="https://mail.clinic.example", batch_size=25),
            name=f"w{i}",
        )
        for i, t in enumerate(transports)
    ]
    reports: list[Any] = [None, None]
    start = threading.Barrier(2)

    def go(i: int) -> None:
        start.wait()
        reports[i] = workers[i].run()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    with transaction(workspace.engine) as s:
        claims = s.execute(
            select(OutboxTransition.outbox_id, OutboxTransition.detail).where(
                OutboxTransition.state == "claimed"
            )
        ).all()
        states = Counter(s.scalars(select(OutboxMessage.state)))
    per_message = Counter(oid for oid, _ in claims)
    assert states == {"sent": n}
    assert set(per_message.values()) == {1}  # each message claimed exactly once
    assert sum(t.accepted for t in transports) == n  # and handed over exactly once
    by_worker = Counter(detail for _, detail in claims)
    assert set(by_worker) <= {"w0", "w1"}
    if workspace.engine.dialect.name == "postgresql":
        assert min(by_worker.values()) > 0  # both really worked, side by side
