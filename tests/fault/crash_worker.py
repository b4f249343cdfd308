"""Kill -9 a delivery worker again and again during a campaign; count at the sink.

The claim under test (DESIGN rule 6): a crash never loses a message and duplicates at most
the messages in flight. A real worker process (`carepost worker --until-idle`) delivers a
campaign to a real STARTTLS SMTP server in this process and is killed with SIGKILL at
random moments; then workers run until every row is final. Counted by Message-ID at the
sink: lost must be 0, duplicates at most concurrency x kills, and no row may be left
`claimed` or `attempt_started` once its lease has passed.

CI runs it at reduced counts (tests/integration/test_worker_crash.py). Full counts, by
hand, from the project root:

    .venv/bin/python tests/fault/crash_worker.py --recipients 5000 --kills 20
    .venv/bin/python tests/fault/crash_worker.py --recipients 5000 --kills 20 \\
        --database-url postgresql://postgres@127.0.0.1:5432/carepost_test
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import trustme  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from carepost.audit.actor import Actor  # noqa: E402
from carepost.config import Settings  # noqa: E402
from carepost.db import transaction  # noqa: E402
from carepost.delivery import timeline  # noqa: E402
from carepost.delivery.models import DeliveryAttempt, OutboxMessage, OutboxTransition  # noqa: E402
from carepost.workspace import init_workspace  # noqa: E402
from delivery_support import campaign_scenario  # noqa: E402
from smtp_sink import start_sink  # noqa: E402

LEASE_SECONDS = 3.0
CONCURRENCY = 20  # the worker's batch size and concurrency: what can be in flight
# The relay answers each message after this long (stored first, so a kill in between
# makes a real duplicate). Without it a worker sends 5,000 messages within a few of its
# lives, and the campaign is over before twenty kills have landed.
SINK_DELAY = 0.15


@dataclass
class CrashReport:
    recipients: int
    kills: int
    received: int
    unique: int
    lost: int
    duplicates: int
    stuck: int
    states: dict[str, int]
    seconds: float
    # Messages whose timeline (delivery.timeline, as the evidence report reads it) is not
    # queued, then claims, each attempt's start right after a claim, and one `sent` last.
    broken_timelines: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicates <= CONCURRENCY * self.kills
            and self.stuck == 0
            and self.states == {"sent": self.recipients}
            and self.broken_timelines == 0
        )


def _well_formed(states: list[str]) -> bool:
    return (
        len(states) >= 4
        and states[0] == "queued"
        and states[-1] == "sent"
        and states.count("sent") == 1
        and all(
            states[i - 1] == "claimed" for i, st in enumerate(states) if st == "attempt_started"
        )
    )


def broken_timelines(session: Session) -> int:
    """Timelines read in bulk (two queries) and merged as delivery.timeline.read does."""
    transitions: dict[str, list[timeline.TransitionRow]] = defaultdict(list)
    attempts: dict[str, list[timeline.AttemptRow]] = defaultdict(list)
    for oid, seq, state, at, detail in session.execute(
        select(
            OutboxTransition.outbox_id,
            OutboxTransition.seq,
            OutboxTransition.state,
            OutboxTransition.at,
            OutboxTransition.detail,
        )
    ):
        transitions[oid].append((seq, state, at, detail))
    for oid, *row in session.execute(
        select(
            DeliveryAttempt.outbox_id,
            DeliveryAttempt.claim_seq,
            DeliveryAttempt.started_at,
            DeliveryAttempt.finished_at,
            DeliveryAttempt.result_state,
            DeliveryAttempt.result_reason,
        )
    ):
        attempts[oid].append((row[0], row[1], row[2], row[3], row[4]))
    return sum(
        1
        for oid in transitions.keys() | attempts.keys()
        if not _well_formed([st for st, _, _ in timeline.merge(transitions[oid], attempts[oid])])
    )


def _worker_env(data_dir: Path, db_url: str, sink_port: int, ca_file: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CAREPOST_DATA_DIR": str(data_dir),
        "CAREPOST_DATABASE_URL": db_url,
        "CAREPOST_TRANSPORT": "smtp",
        "CAREPOST_SMTP_HOST": "127.0.0.1",
        "CAREPOST_SMTP_PORT": str(sink_port),
        "CAREPOST_SMTP_CA_FILE": str(ca_file),
        "CAREPOST_SMTP_TIMEOUT": "5",
        "CAREPOST_PUBLIC_URL": "https://mail.clinic.example",
        "CAREPOST_WORKER_BATCH_SIZE": str(CONCURRENCY),
        "CAREPOST_WORKER_CONCURRENCY": str(CONCURRENCY),
        "CAREPOST_WORKER_LEASE_MINUTES": str(LEASE_SECONDS / 60),
    }


def run(db_url: str, recipients: int, kills: int, seed: int, workdir: Path) -> CrashReport:
    rng = random.Random(seed)
    ws = init_workspace(settings=Settings(data_dir=workdir / "ws", database_url=db_url))
    ca = trustme.CA()
    ca_file = workdir / "sink-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    sink = start_sink(ca)
    sink.state.data_delay = SINK_DELAY
    started = time.perf_counter()
    try:
        emails = [f"ok.{i}@sink.test" for i in range(recipients)]
        campaign_scenario(
            ws, Actor("cli:crash-test", "cli", "test"), emails, (), message_class="treatment"
        )
        env = _worker_env(ws.settings.data_dir, db_url, sink.port, ca_file)
        command = [sys.executable, "-m", "carepost.cli", "worker", "--until-idle"]
        done = 0
        for _ in range(kills):
            proc = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            # A worker takes about a second to start; kill it anywhere in its life.
            time.sleep(rng.uniform(0.6, 2.5))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                done += 1
            proc.wait()
        for _ in range(50):  # finish: expired leases come back, unknowns are retried
            subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
            with transaction(ws.engine) as s:
                pending = s.scalar(
                    select(func.count()).where(
                        OutboxMessage.state.not_in(("sent", "failed", "denied"))
                    )
                )
            if not pending:
                break
            time.sleep(LEASE_SECONDS)
        with transaction(ws.engine) as s:
            rows = s.execute(select(OutboxMessage.id, OutboxMessage.state)).all()
            broken = broken_timelines(s)
        expected = {f"<{oid}@clinic.example>" for oid, _ in rows}
        ids = sink.state.message_ids()
        counts = Counter(ids)
        return CrashReport(
            recipients=recipients,
            kills=done,
            received=len(ids),
            unique=len(counts),
            lost=len(expected - set(counts)),
            duplicates=len(ids) - len(counts),
            stuck=sum(1 for _, st in rows if st in ("claimed", "attempt_started")),
            states=dict(Counter(st for _, st in rows)),
            seconds=time.perf_counter() - started,
            broken_timelines=broken,
        )
    finally:
        sink.stop()
        ws.close()


def pg_schema_url(base: str) -> tuple[str, str]:
    """A fresh schema on the PostgreSQL server, so the run leaves the database as it was."""
    schema = f"crash_{uuid.uuid4().hex[:10]}"
    engine = create_engine(
        base.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}", schema


def drop_schema(base: str, schema: str) -> None:
    engine = create_engine(
        base.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=5000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default="", help="PostgreSQL; default SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="carepost-crash-") as tmp:
        workdir = Path(tmp)
        schema = None
        url = args.database_url
        if url:
            url, schema = pg_schema_url(args.database_url)
        else:
            url = f"sqlite:///{workdir / 'crash.db'}"
        try:
            report = run(url, args.recipients, args.kills, args.seed, workdir)
        finally:
            if schema:
                drop_schema(args.database_url, schema)
    engine = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"{engine}: {report.recipients} recipients, {report.kills} kills (SIGKILL), "
        f"{report.seconds:.0f} s"
    )
    print(
        f"  received {report.received}, unique {report.unique}, lost {report.lost}, "
        f"duplicates {report.duplicates} (bound {CONCURRENCY * report.kills}), "
        f"stuck {report.stuck}, final states {report.states}, "
        f"broken timelines {report.broken_timelines}"
    )
    all_kills = report.kills == args.kills
    if not all_kills:
        print(f"  only {report.kills} of {args.kills} kills landed before the campaign ended")
    print("  OK" if report.ok and all_kills else "  FAILED")
    sys.exit(0 if report.ok and all_kills else 1)


if __name__ == "__main__":
    main()
