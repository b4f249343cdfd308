"""What one claim of a batch costs as the queue grows: `outbox.claim` of 500 rows with
1,000 to 200,000 rows of a running campaign queued, with the partial index
`ix_outbox_ready` (the claim reads its batch off the index's front) and, in the same run,
without it (the claim as it was before migration 0018: the index dropped and the SELECT
planned by the statistics alone, which read and sorted every due row).

Anchor, same run: the claim with the index at the smallest depth. A claim that costs the
same at every depth reads only its batch; one whose cost grows with the depth pays for
the whole queue at every batch, so a large campaign's sending slows down by the square
of its size.

Each claim runs in a transaction that is rolled back, so every claim sees the same
queue. The rows are written by the database itself (`INSERT ... SELECT`), all for one
contact: the claim's plan depends on how many rows are due, not on whose they are.

    python claim_depth.py [--depths 1000,20000,200000] [--claims 7] [--database-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import drop, machine
from send_throughput import setup
from sqlalchemy import select, text

from carepost.config import Settings
from carepost.db import transaction
from carepost.delivery import machine as delivery_machine
from carepost.delivery import outbox
from carepost.delivery.models import OutboxMessage
from carepost.workspace import Workspace, open_workspace

BATCH = 500


def campaign(ws: Workspace) -> tuple[str, str]:
    """The running campaign send_throughput's set-up made, and its one contact."""
    with transaction(ws.engine) as s:
        row = s.execute(select(OutboxMessage.campaign_id, OutboxMessage.contact_id)).one()
    assert row.campaign_id is not None
    return row.campaign_id, row.contact_id


def fill_to(ws: Workspace, campaign_id: str, contact_id: str, have: int, want: int) -> None:
    if ws.engine.dialect.name == "postgresql":
        series = (
            "SELECT g AS n FROM generate_series(CAST(:first AS integer), "
            "CAST(:last AS integer)) AS g"
        )
    else:
        series = (
            "WITH RECURSIVE g(n) AS (SELECT :first UNION ALL SELECT n + 1 FROM g "
            "WHERE n < :last) SELECT n FROM g"
        )
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with transaction(ws.engine) as s:
        s.execute(
            text(
                "INSERT INTO outbox (id, campaign_id, contact_id, lane, state, attempts, "
                "unknown_retries, next_attempt_at, created_at, updated_at, held_back) "
                "SELECT 'fill' || n, :campaign, :contact, 1, 'queued', 0, 0, :at, :at, :at, 0 "
                f"FROM ({series}) AS s"
            ),
            {
                "first": have + 1,
                "last": want,
                "campaign": campaign_id,
                "contact": contact_id,
                "at": at,
            },
        )
    with ws.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def claim_seconds(ws: Workspace, claims: int) -> float:
    """Median wall time of a claim of BATCH rows, each rolled back."""
    times = []
    for _ in range(claims):
        with ws.engine.connect() as conn:
            from sqlalchemy.orm import Session

            with Session(bind=conn) as s:
                started = time.perf_counter()
                got = outbox.claim(
                    s,
                    worker="bench",
                    at=datetime.now(UTC),
                    limit=BATCH,
                    lease=timedelta(minutes=5),
                    policy=delivery_machine.RetryPolicy(),
                )
                times.append(time.perf_counter() - started)
                assert len(got) == BATCH, len(got)
                s.rollback()
    return statistics.median(times)


def set_index(ws: Workspace, present: bool) -> None:
    with ws.engine.connect() as conn:
        if present:
            conn.exec_driver_sql(
                "CREATE INDEX IF NOT EXISTS ix_outbox_ready ON outbox (lane, next_attempt_at, id) "
                "WHERE state IN ('queued', 'deferred', 'unknown')"
            )
        else:
            conn.exec_driver_sql("DROP INDEX IF EXISTS ix_outbox_ready")
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--depths", default="1000,20000,200000")
    parser.add_argument("--claims", type=int, default=7)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    depths = sorted(int(d) for d in args.depths.split(","))
    folder = Path(tempfile.mkdtemp(prefix="carepost-claim-"))
    data_dir, url, _ = setup(args.database_url, folder, 1)
    settings = Settings(data_dir=Path(data_dir), database_url=url)
    ws = open_workspace(settings=settings)
    try:
        campaign_id, contact_id = campaign(ws)
        kind = ws.engine.dialect.name
        print(f"machine: {machine()}")
        print(f"date: {datetime.now(UTC):%Y-%m-%d}")
        print(f"{kind}: median of {args.claims} claims of {BATCH}, each rolled back")
        have, anchor = 1, 0.0
        for depth in depths:
            fill_to(ws, campaign_id, contact_id, have, depth)
            have = depth
            with_index = claim_seconds(ws, args.claims)
            # The claim as it was before migration 0018: no index in its order, and
            # planned by the statistics alone.
            set_index(ws, present=False)
            ordered = outbox._ordered_by_index
            outbox._ordered_by_index = lambda _session: contextlib.nullcontext()  # type: ignore[assignment]
            try:
                without = claim_seconds(ws, args.claims)
            finally:
                outbox._ordered_by_index = ordered  # type: ignore[assignment]
            set_index(ws, present=True)
            anchor = anchor or with_index
            print(
                f"  {depth:>8,} queued: with ix_outbox_ready {with_index * 1e3:8.1f} ms "
                f"({with_index / anchor:.1f}x the anchor); without {without * 1e3:8.1f} ms "
                f"({without / anchor:.1f}x)"
            )
        print(f"anchor: the claim with the index at {depths[0]:,} queued, {anchor * 1e3:.1f} ms")
    finally:
        ws.close()
        drop(Workspace(settings), Path(data_dir))
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
