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

from sqlalchemy import event, text

from carepost.audit.actor import Actor
from carepost.db import transaction
from carepost.delivery import machine, outbox
from carepost.delivery.models import READY
from carepost.workspace import Workspace
from delivery_support import campaign_scenario

QUEUED = 5000


def _fill(ws: Workspace, campaign_id: str, contact_id: str) -> None:
    """QUEUED more due rows of the campaign, written by the database itself (the claim's
    plan depends on the table's size, not on who its contacts are)."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with transaction(ws.engine) as s:
        if ws.engine.dialect.name == "postgresql":
            series = "SELECT g AS n FROM generate_series(1, :count) AS g"
        else:
            series = (
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g "
                "WHERE n < :count) SELECT n FROM g"
            )
        s.execute(
            text(
                "INSERT INTO outbox (id, campaign_id, contact_id, lane, state, attempts, "
                "unknown_retries, next_attempt_at, created_at, updated_at, held_back) "
                f"SELECT 'fill' || n, :campaign, :contact, 1, 'queued', 0, 0, :at, :at, :at, 0 "
                f"FROM ({series}) AS s"
            ),
            {"count": QUEUED, "campaign": campaign_id, "contact": contact_id, "at": at},
        )
    with ws.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def _claim_statement(ws: Workspace) -> tuple[str, Any]:
    """The SELECT that outbox.claim sends for its batch, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "ORDER BY outbox.lane" in statement:
            seen.append((statement, parameters))

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
    statement, parameters = _claim_statement(workspace)
    # The states are in the statement as the index's predicate spells them.
    assert READY.split(" IN ")[1] in statement
    raw = workspace.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if workspace.engine.dialect.name == "postgresql":
            cursor.execute("EXPLAIN " + statement, parameters)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        plan = "\n".join(" ".join(str(c) for c in row) for row in cursor.fetchall())
    finally:
        raw.close()
    assert "ix_outbox_ready" in plan, plan
    # No sort of the due rows: the index gives the claim's order.
    assert "Sort" not in plan, plan
    assert "TEMP B-TREE" not in plan, plan
