"""Journey engine throughput: N enrolments through a 5-step journey with waits, on the
test clock (issue 8's figure: >= 2,000 step transitions/s, on SQLite and PostgreSQL,
sends going into the outbox).

The journey: send, wait 1 day, send, wait for an open of the first message (2-day
timeout), exit. Three phases at T0, T0+1d and T0+3d; each runs the engine until nothing
is due. Counted: transitions written (7 per enrolment) over the engine's wall time, and
the outbox rows (2 per enrolment).

Anchor (same run, same database): the engine's writes with none of its work, i.e. the
same number of plain rows (7 transitions and 2 outbox rows per enrolment, as short
texts) inserted by `executemany` in transactions of the same batch size into a bare
table with a primary key. What the engine pays for over it: reading the due enrolments,
deciding each step, the leases, the hidden campaigns' gate checks and the outbox rows'
real columns and indexes.

    .venv/bin/python benchmarks/journey_throughput.py --enrolments 100000
    .venv/bin/python benchmarks/journey_throughput.py --enrolments 100000 \\
        --database-url postgresql://postgres@127.0.0.1:5432/carepost_test
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import drop, fresh_workspace, machine
from sqlalchemy import Engine, func, select, text

from carepost.audit.actor import Actor
from carepost.campaigns import service as campaigns
from carepost.clock import Clock
from carepost.contacts.store import ContactInput, ContactWriter
from carepost.content.service import add_template
from carepost.content.template import TemplateSpec
from carepost.db import transaction
from carepost.delivery.models import OutboxMessage
from carepost.journeys import service
from carepost.journeys.engine import JourneyEngine
from carepost.journeys.models import JourneyTransition

JOURNEY = b"""
name: bench
trigger: {manual: {}}
steps:
  - id: first
    send: {template: bench-1, class: treatment}
  - id: pause
    wait: {duration: 1d}
  - id: second
    send: {template: bench-2, class: treatment}
  - id: wait-open
    wait: {event: opened, step: first, timeout: 2d}
  - id: fin
    exit: {}
"""
HTML = "<p>Dear {{ first_name }}, <a href='https://clinic.example/x'>news</a></p>"
T0 = datetime(2027, 1, 4, 8, tzinfo=UTC)


class Clock_:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def anchor_writes(engine: Engine, rows: int, batch: int) -> float:
    """Seconds to insert `rows` plain rows in transactions of `batch` rows."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE bench_anchor (id VARCHAR(32) PRIMARY KEY, enrolment VARCHAR(32),"
                " step VARCHAR(32), kind VARCHAR(16), at VARCHAR(32))"
            )
        )
    insert = text(
        "INSERT INTO bench_anchor (id, enrolment, step, kind, at) VALUES (:i, :e, :s, :k, :a)"
    )
    at = T0.isoformat()
    started = time.perf_counter()
    for first in range(0, rows, batch):
        values = [
            {"i": f"{i:032x}", "e": f"{i // 9:032x}", "s": "second", "k": "entered", "a": at}
            for i in range(first, min(first + batch, rows))
        ]
        with engine.begin() as conn:
            conn.execute(insert, values)
    elapsed = time.perf_counter() - started
    with engine.begin() as conn:
        assert conn.scalar(text("SELECT count(*) FROM bench_anchor")) == rows
        conn.execute(text("DROP TABLE bench_anchor"))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--enrolments", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    n = args.enrolments
    ws, folder = fresh_workspace(args.database_url)
    actor = Actor("bench", "cli", "bench")
    try:
        t0 = time.perf_counter()
        with transaction(ws.engine) as session:
            writer = ContactWriter(session, ws.keyring, now=T0, source="bench")
            outcomes = writer.upsert_contacts(
                [
                    ContactInput(
                        f"bench:{i}",
                        {"v": 1, "name": {"given": [f"G{i}"]}, "emails": [f"p{i}@sink.example"]},
                        [("email", f"p{i}@sink.example")],
                    )
                    for i in range(n)
                ]
            )
            ids = [o.contact_id for o in outcomes if o.contact_id]
        with transaction(ws.engine) as session:
            campaigns.add_sender(
                session,
                sender_id="bench",
                from_name="Bench Clinic",
                from_address="care@clinic.example",
                postal_address="1 Example Way, Springfield, MA 01101",
                organization_name="Bench Clinic",
                actor=actor,
            )
            for name in ("bench-1", "bench-2"):
                spec = TemplateSpec(name, "News", HTML, "treatment", ("first_name",))
                add_template(session, spec, actor=actor)
            clock = Clock_()
            service.do_publish_journey(
                session, JOURNEY, sender_id="bench", actor=actor, clock=clock
            )
            service.enrol(session, "bench", ids, now=T0, source="manual")
        print(f"machine: {machine()}")
        print(f"date: {datetime.now(UTC):%Y-%m-%d}")
        print(f"setup ({n} contacts, enrolled): {time.perf_counter() - t0:.0f} s")
        typed: Clock = clock
        engine = JourneyEngine(ws.engine, typed, batch=args.batch)
        spent = 0.0
        transitions = 0
        for offset in (timedelta(0), timedelta(days=1), timedelta(days=3)):
            clock.now = T0 + offset
            started = time.perf_counter()
            report = engine.run_until_idle()
            elapsed = time.perf_counter() - started
            spent += elapsed
            transitions += report.transitions
            print(
                f"  phase T0+{offset.days}d: {report.transitions} transitions, "
                f"{report.sends} sends in {elapsed:.1f} s -> {report.transitions / elapsed:,.0f}/s"
            )
        with transaction(ws.engine) as session:
            outbox = session.scalar(select(func.count()).select_from(OutboxMessage))
            stored = session.scalar(select(func.count()).select_from(JourneyTransition))
        assert transitions == 7 * n, transitions
        assert outbox == 2 * n, outbox
        assert stored == 8 * n, stored  # with the `enrolled` transitions
        kind = "PostgreSQL" if args.database_url else "SQLite"
        print(
            f"carepost journeys, {kind}, batch {args.batch}: {n} enrolments, {transitions} "
            f"step transitions in {spent:.1f} s -> {transitions / spent:,.0f} transitions/s; "
            f"{outbox} outbox rows"
        )
        plain = transitions + outbox
        anchor = anchor_writes(ws.engine, plain, args.batch)
        print(
            f"anchor (plain executemany, batches of {args.batch}): {plain} rows in "
            f"{anchor:.1f} s -> {plain / anchor:,.0f} rows/s"
        )
        print(f"ratio carepost/anchor: {spent / anchor:.1f}x the time")
    finally:
        drop(ws, folder)


if __name__ == "__main__":
    main()
