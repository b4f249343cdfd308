"""Encrypted CSV import of N synthetic contacts (default 100,000) into a fresh workspace.

Anchor, measured in the same run on the same file: Python's csv module reading the file
and sqlite3 inserting the rows as plaintext into one table with executemany, in one
transaction (no validation, no encryption, no blind indexes). The ratio says what
validation, envelope encryption and blind indexing cost over the cheapest possible load.

    python benchmarks/import_csv.py [--contacts 100000] [--runs 3] [--database-url URL]
"""

from __future__ import annotations

import argparse
import csv
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import drop, fresh_workspace, machine, median_of

from carepost.audit.actor import Actor
from carepost.contacts.importers.csv_import import CsvMapping, import_csv
from carepost.contacts.service import count_contacts
from carepost.contacts.synthetic import write_csv
from carepost.db import transaction


def carepost_once(path: Path, n: int, database_url: str) -> float:
    ws, folder = fresh_workspace(database_url)
    try:
        started = time.perf_counter()
        with transaction(ws.engine) as session:
            summary = import_csv(
                session,
                ws.keyring,
                path,
                CsvMapping(),
                actor=Actor("bench", "cli", "bench"),
                now=datetime.now(UTC),
                skip_invalid=False,
            )
        elapsed = time.perf_counter() - started
        with transaction(ws.engine) as session:
            assert count_contacts(session) == n
        assert summary.counts["Contact"]["created"] == n
        return elapsed
    finally:
        drop(ws, folder)


def anchor_once(path: Path, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "anchor.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        started = time.perf_counter()
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            cols = ", ".join(f"c{i}" for i in range(len(header)))
            db.execute(f"CREATE TABLE plain (id INTEGER PRIMARY KEY, {cols})")
            db.execute("BEGIN")
            marks = ", ".join("?" * len(header))
            db.executemany(f"INSERT INTO plain ({cols}) VALUES ({marks})", reader)
            db.execute("COMMIT")
        elapsed = time.perf_counter() - started
        assert db.execute("SELECT count(*) FROM plain").fetchone()[0] == n
        db.close()
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_csv(Path(tmp) / "contacts.csv", args.contacts)
        ours, our_runs = median_of(
            args.runs, lambda: carepost_once(path, args.contacts, args.database_url)
        )
        anchor, anchor_runs = median_of(args.runs, lambda: anchor_once(path, args.contacts))
    engine = "PostgreSQL" if args.database_url else "SQLite"
    print(f"machine: {machine()}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d}")
    print(
        f"carepost encrypted CSV import, {args.contacts:,} contacts, {engine}: median "
        f"{ours:.2f} s of {[round(t, 2) for t in our_runs]} -> {args.contacts / ours:,.0f} "
        "contacts/s"
    )
    print(
        f"anchor (csv + sqlite3 executemany, plaintext): median {anchor:.2f} s of "
        f"{[round(t, 2) for t in anchor_runs]} -> {args.contacts / anchor:,.0f} rows/s"
    )
    print(f"ratio carepost/anchor: {ours / anchor:.1f}x the time")


if __name__ == "__main__":
    main()
