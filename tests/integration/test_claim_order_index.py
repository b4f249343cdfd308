"""The claim reads its batch off the front of `ix_outbox_ready`, on both databases.

Without that index (or with a claim whose state list the planner cannot match against
the index's predicate, e.g. sent as parameters) every claim reads and sorts every due
row: fine for a hundred rows, 565 ms a claim with 200,000 queued (docs/benchmarks.md).
The plan is read for the statement the real `outbox.claim` sends, so a change to either
the index or the claim's WHERE that stops them matching fails here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event

from carepost.audit.actor import Actor
from carepost.db import transaction
from carepost.delivery import machine, outbox
from carepost.delivery.models import READY
from carepost.workspace import Workspace
from delivery_support import campaign_scenario

QUEUED = 5000


def _fill(ws: Workspace, campaign_id: str, contact_id: str) -> None:
    """QUEUED more due rows of the campaign, enqueued as a campaign's start enqueues them
    and claimed right after, with no ANALYZE of ours: the plan must not depend on
    statistics that a just-started campaign has not had time to get. (All for one
    contact: the claim's plan depends on how many rows are due, not on whose they are.)"""
    with transaction(ws.engine) as s:
        outbox.enqueue(
            s,
            campaign_id=campaign_id,
            contact_ids=[contact_id] * QUEUED,
            lane=outbox.LANE_CAMPAIGN,
            at=datetime(2026, 1, 1, tzinfo=UTC),
        )


def _claim_plan(ws: Workspace) -> tuple[str, str]:
    """The SELECT that outbox.claim sends for its batch, and its plan, read on the same
    connection in the same transaction just before it runs (so with whatever the claim
    set for it)."""
    seen: list[tuple[str, str]] = []
    explain = "EXPLAIN " if ws.engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "

    def keep(_conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "ORDER BY outbox.lane" in statement:
            probe = cursor.connection.cursor()
            probe.execute(explain + statement, parameters)
            plan = "\n".join(" ".join(str(c) for c in row) for row in probe.fetchall())
            probe.close()
            seen.append((statement, plan))

    event.listen(ws.engine, "before_cursor_execute", keep)
    try:
        with transaction(ws.engine) as s:
            claimed = outbox.claim(
                s,
                worker="w1",
                at=datetime.now(UTC),
                limit=100,
                lease=timedelta(minutes=5),
                policy=machine.RetryPolicy(),
            )
            assert len(claimed) == 100
    finally:
        event.remove(ws.engine, "before_cursor_execute", keep)
    assert len(seen) == 1
    return seen[0]


def test_the_claim_reads_its_batch_off_the_ready_index(workspace: Workspace, actor: Actor) -> None:
    sc = campaign_scenario(workspace, actor, ["a@x.test"], [0])
    _fill(workspace, sc.campaign_id, sc.contact_ids[0])
    statement, plan = _claim_plan(workspace)
    # The states are in the statement as the index's predicate spells them.
    assert READY.split(" IN ")[1] in statement
    assert "ix_outbox_ready" in plan, plan
    # No sort of the due rows: the index gives the claim's order.
    assert "Sort" not in plan, plan
    assert "TEMP B-TREE" not in plan, plan
