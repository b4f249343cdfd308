"""Kill -9 the journey engine again and again while it processes due timers; count what
the enrolments and the outbox hold afterwards.

The claim under test (issue 8): a step executes at least once and is idempotent, so a
crash loses no step and queues no second message. A population goes through the welcome
series (send, wait 3d, send, wait 4d, branch, exit) in three phases at fixed instants
(T0, T0+3d, T0+7d); in each phase real engine processes (this file with --child, a
JourneyEngine on a fixed clock, small batches) are killed with SIGKILL at random moments,
then one runs to the end. Afterwards every enrolment must have taken exactly the nine
expected transitions and every contact must have exactly two messages in the outbox.

CI runs it at reduced counts (tests/integration/test_journey_crash.py). Full counts, by
hand, from the project root:

    .venv/bin/python tests/fault/crash_journeys.py --enrolments 5000 --kills 21
    .venv/bin/python tests/fault/crash_journeys.py --enrolments 5000 --kills 21 \\
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
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from crash_worker import drop_schema, pg_schema_url  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from carepost.audit.actor import Actor  # noqa: E402
from carepost.config import Settings  # noqa: E402
from carepost.db import transaction  # noqa: E402
from carepost.delivery.models import OutboxMessage  # noqa: E402
from carepost.journeys import service  # noqa: E402
from carepost.journeys.models import JourneyEnrolment, JourneyTransition  # noqa: E402
from carepost.workspace import init_workspace  # noqa: E402
from journey_support import START, StepClock, publish, setup  # noqa: E402

BATCH = 20
EXPECTED = [
    ("welcome", "enrolled"),
    ("welcome", "sent"),
    ("pause-1", "waiting"),
    ("pause-1", "woke"),
    ("tips", "sent"),
    ("pause-2", "waiting"),
    ("pause-2", "woke"),
    ("engaged", "branched_else"),
    ("done", "exited"),
]
PHASES = (timedelta(0), timedelta(days=3), timedelta(days=7))


@dataclass
class JourneyCrashReport:
    enrolments: int
    kills: int
    mid_processing: int  # kills after which the phase was started but not finished
    lost_steps: int  # enrolments whose path is not the expected one
    duplicate_sends: int  # outbox rows beyond two per contact
    missing_sends: int
    states: dict[str, int]
    seconds: float

    @property
    def ok(self) -> bool:
        return (
            self.lost_steps == 0
            and self.duplicate_sends == 0
            and self.missing_sends == 0
            and self.states == {"exited": self.enrolments}
        )


def _child(db_url: str, at: str) -> None:
    from carepost.clock import fixed_clock
    from carepost.db import make_engine
    from carepost.journeys.engine import JourneyEngine

    engine = make_engine(db_url)
    print("ready", flush=True)  # imports done: the parent kills from here on
    JourneyEngine(engine, fixed_clock(datetime.fromisoformat(at)), batch=BATCH).run_until_idle()


def run(db_url: str, enrolments: int, kills: int, seed: int, workdir: Path) -> JourneyCrashReport:
    rng = random.Random(seed)
    ws = init_workspace(settings=Settings(data_dir=workdir / "ws", database_url=db_url))
    actor = Actor("cli:crash-test", "cli", "test")
    started = time.perf_counter()
    try:
        clock = StepClock(START)
        ids = setup(ws, actor, enrolments)
        publish(ws, actor, "welcome-series", clock)
        with transaction(ws.engine) as session:
            service.do_enrol(session, "welcome-series", ids, actor=actor, clock=clock)
        done = mid = 0
        # Transitions each phase writes per enrolment (see EXPECTED).
        per_phase = (2, 3, 3)
        base = enrolments  # the `enrolled` transitions
        for i, offset in enumerate(PHASES):
            at = (START + offset).isoformat()
            command = [sys.executable, __file__, "--child", db_url, "--at", at]
            share = kills // len(PHASES) + (1 if i < kills % len(PHASES) else 0)
            for _ in range(share):
                proc = subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
                )
                assert proc.stdout is not None
                proc.stdout.readline()  # started: kill it while it works through the timers
                time.sleep(rng.uniform(0.05, 0.8))
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    done += 1
                proc.wait()
                with transaction(ws.engine) as s:
                    moved = s.scalar(select(func.count()).select_from(JourneyTransition))
                if base < int(moved or 0) < base + per_phase[i] * enrolments:
                    mid += 1
            subprocess.run(command, check=True, capture_output=True, timeout=600)
            base += per_phase[i] * enrolments
        with transaction(ws.engine) as s:
            paths: dict[str, list[tuple[str, str]]] = {}
            for enrolment, step, outcome in s.execute(
                select(
                    JourneyTransition.enrolment_id,
                    JourneyTransition.step,
                    JourneyTransition.outcome,
                ).order_by(JourneyTransition.enrolment_id, JourneyTransition.seq)
            ):
                paths.setdefault(enrolment, []).append((step, outcome))
            states = Counter(s.scalars(select(JourneyEnrolment.status)))
            per_contact = dict(
                s.execute(
                    select(OutboxMessage.contact_id, func.count()).group_by(
                        OutboxMessage.contact_id
                    )
                ).all()
            )
        return JourneyCrashReport(
            enrolments=enrolments,
            kills=done,
            mid_processing=mid,
            lost_steps=sum(1 for p in paths.values() if p != EXPECTED) + (enrolments - len(paths)),
            duplicate_sends=sum(max(int(n) - 2, 0) for n in per_contact.values()),
            missing_sends=sum(max(2 - int(per_contact.get(c, 0)), 0) for c in ids),
            states=dict(states),
            seconds=time.perf_counter() - started,
        )
    finally:
        ws.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enrolments", type=int, default=5000)
    parser.add_argument("--kills", type=int, default=21)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default="", help="PostgreSQL; default SQLite")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--at", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.at)
        return
    with tempfile.TemporaryDirectory(prefix="carepost-jcrash-") as tmp:
        workdir = Path(tmp)
        schema = None
        url = args.database_url
        if url:
            url, schema = pg_schema_url(args.database_url)
        else:
            url = f"sqlite:///{workdir / 'crash.db'}"
        try:
            report = run(url, args.enrolments, args.kills, args.seed, workdir)
        finally:
            if schema:
                drop_schema(args.database_url, schema)
    engine = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"{engine}: {report.enrolments} enrolments, {report.kills} kills (SIGKILL), "
        f"{report.mid_processing} of them mid-processing, {report.seconds:.0f} s; "
        f"lost steps {report.lost_steps}, duplicate sends "
        f"{report.duplicate_sends}, missing sends {report.missing_sends}, states {report.states}"
    )
    print("  OK" if report.ok else "  FAILED")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
