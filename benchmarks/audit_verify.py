"""`audit verify` over N entries (default 1,000,000) of a real chain in a fresh workspace.

The chain is built with the same hashing as `audit.append` and bulk-inserted (appending a
million entries one transaction at a time would take minutes and measure the writer, not
the verifier). Anchor, measured in the same run: one process reading every row with the
driver, serializing it and computing one SHA-256 over it: the least any verifier of a
hash chain must do, without the chain checks or a second process.

    python benchmarks/audit_verify.py [--entries 1000000] [--runs 3] [--database-url URL]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from datetime import UTC, datetime

import orjson
from _common import drop, fresh_workspace, machine, median_of
from sqlalchemy import update

from carepost.audit import service as audit
from carepost.audit.chain import FIELDS, GENESIS, entry_hash
from carepost.audit.models import AuditEntry, AuditHead
from carepost.db import bulk_insert, read_only, transaction
from carepost.workspace import Workspace


def build(ws: Workspace, n: int) -> bytes:
    prev = GENESIS
    batch: list[tuple[object, ...]] = []
    with transaction(ws.engine) as session:
        for seq in range(1, n + 1):
            fields: list[object] = [
                seq,
                "2026-11-23T12:00:00.000000Z",
                "cli:bench",
                "contacts.phi_read",
                f'["{seq:032x}"]',
                "treatment",
                "cli",
                "bench-host",
                "{}",
            ]
            digest = entry_hash(prev, fields)
            batch.append((*fields, prev, digest))
            prev = digest
            if len(batch) == 50_000:
                bulk_insert(session, AuditEntry.__table__, FIELDS, batch)
                batch = []
        bulk_insert(session, AuditEntry.__table__, FIELDS, batch)
        session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=n, hash=prev))
    return prev


def anchor_once(ws: Workspace) -> float:
    started = time.perf_counter()
    with read_only(ws.engine) as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cur = raw.cursor(name="anchor") if ws.engine.dialect.name == "postgresql" else raw.cursor()
        cur.execute(f"SELECT {', '.join(FIELDS)} FROM audit_log ORDER BY seq")
        sha = hashlib.sha256
        dumps = orjson.dumps
        while rows := cur.fetchmany(20_000):
            for row in rows:
                sha(dumps(row[:9])).digest()
        cur.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    ws, folder = fresh_workspace(args.database_url)
    try:
        head = build(ws, args.entries)

        def ours_once() -> float:
            started = time.perf_counter()
            report = audit.verify(ws.engine)
            elapsed = time.perf_counter() - started
            assert report.ok
            assert report.entries == args.entries
            assert report.head_hash == head
            return elapsed

        def serial_once() -> float:
            started = time.perf_counter()
            report = audit.verify(ws.engine, parallel=1)
            elapsed = time.perf_counter() - started
            assert report.ok
            assert report.entries == args.entries
            return elapsed

        ours, our_runs = median_of(args.runs, ours_once)
        serial, serial_runs = median_of(args.runs, serial_once)
        anchor, anchor_runs = median_of(args.runs, lambda: anchor_once(ws))
    finally:
        drop(ws, folder)
    n = args.entries
    engine = "PostgreSQL" if args.database_url else "SQLite"
    print(f"machine: {machine()}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d}")
    print(
        f"carepost audit verify, {n:,} entries, {engine}: median {ours:.2f} s of "
        f"{[round(t, 2) for t in our_runs]} -> {n / ours:,.0f} entries/s"
    )
    print(
        f"  single process: median {serial:.2f} s of {[round(t, 2) for t in serial_runs]} "
        f"-> {n / serial:,.0f} entries/s"
    )
    print(
        f"anchor (read + serialize + one SHA-256 per row, one process): median {anchor:.2f} s of "
        f"{[round(t, 2) for t in anchor_runs]} -> {n / anchor:,.0f} rows/s"
    )
    print(f"ratio carepost/anchor: {ours / anchor:.2f}x the time")


if __name__ == "__main__":
    main()
