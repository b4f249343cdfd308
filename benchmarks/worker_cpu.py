"""The delivery worker's own CPU a message, with the wire taken out: the send
benchmark's campaign (gate, outbox, render, DKIM RSA-2048, archive) handed to the
`null` transport by one worker process, timed with `time.process_time` (the composing
thread and the signing threads together), and the main thread's share per step.

This is how each change to the worker's database paths was judged (docs/benchmarks.md):
the number moves with the worker's code, not with the sink or the relay.

    python worker_cpu.py [--recipients 8000] [--database-url URL [--server-cpu]]
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import drop, machine
from send_throughput import BATCH, CONCURRENCY, setup

from carepost.audit import service as audit_service
from carepost.config import Settings
from carepost.consent import service as consent_service
from carepost.delivery import outbox
from carepost.delivery import worker as worker_module
from carepost.delivery.null import NullTransport
from carepost.delivery.worker import Worker, WorkerConfig
from carepost.workspace import Workspace, open_workspace

STEPS: list[tuple[Any, str]] = [
    (worker_module.Worker, "_prepare"),
    (worker_module.Worker, "_record"),
    (worker_module, "compose"),
    (worker_module.consent, "gate_batch"),
    (consent_service, "load_states"),
    (worker_module.phi, "read_for_job"),
    (worker_module.outbox, "claim"),
    (outbox, "expire_leases"),
    (outbox, "still_leased"),
    (outbox, "_next_seq"),
    (worker_module, "bulk_insert"),
    (worker_module, "bulk_update"),
    (outbox, "bulk_insert"),
    (consent_service, "bulk_insert"),
    (worker_module, "seal"),
    (outbox, "transition"),
    (audit_service, "_link"),
]
_BULK = {"bulk_insert", "bulk_update"}
_PER_MESSAGE = {"compose", "seal"}  # no database work, and /proc per call would swamp them


def postgres_cpu() -> float:
    """Seconds of CPU every PostgreSQL process has used (the scheduler's exact count, not
    ticks): the worker's backends and the server's own writers alike."""
    total = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() != "postgres":
                continue
            total += int((comm.parent / "schedstat").read_text().split()[0])
        except OSError:
            continue
    return total / 1e9


def timed(
    spent: Counter[str], server: Counter[str] | None, name: str, fn: Callable[..., Any]
) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # The bulk writers are named with their table (their second argument).
        key = f"{name} {args[1].name}" if name in _BULK else name
        watch = server is not None and name not in _PER_MESSAGE
        db_started = postgres_cpu() if watch else 0.0
        started = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] += time.thread_time() - started
            if server is not None and watch:
                server[key] += postgres_cpu() - db_started

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=8000)
    parser.add_argument("--database-url", default="")
    parser.add_argument(
        "--server-cpu",
        action="store_true",
        help="PostgreSQL: also each step's CPU in the server (reads /proc around every step)",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="carepost-worker-cpu-"))
    data_dir, url, _ = setup(args.database_url, folder, args.recipients)
    settings = Settings(data_dir=Path(data_dir), database_url=url)
    try:
        ws = open_workspace(settings=settings)
        spent: Counter[str] = Counter()
        server: Counter[str] | None = Counter() if args.server_cpu and args.database_url else None
        for owner, name in STEPS:
            setattr(owner, name, timed(spent, server, name, getattr(owner, name)))
        db_cpu = postgres_cpu()
        worker = Worker(
            ws.engine,
            ws.keyring,
            NullTransport(),
            WorkerConfig(
                batch_size=BATCH,
                concurrency=CONCURRENCY,
                lease=timedelta(minutes=10),
                public_url="https://mail.clinic.example",
            ),
            name="cpu-1",
        )
        cpu, wall = time.process_time(), time.perf_counter()
        report = worker.run(until_idle=True)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        db_cpu = postgres_cpu() - db_cpu
        ws.close()
        n = report.results["sent"]
        assert n == args.recipients, report
        kind = "PostgreSQL" if args.database_url else "SQLite"
        print(f"machine: {machine()}")
        print(f"date: {datetime.now(UTC):%Y-%m-%d}")
        print(
            f"{n} messages, null transport, {kind}: {n / wall:,.0f} msg/s; worker CPU "
            f"{cpu / n * 1e6:,.0f} µs a message (all threads)"
            + (f"; PostgreSQL {db_cpu / n * 1e6:,.0f} µs a message" if args.database_url else "")
        )
        print(
            "main thread, µs a message, by step (steps nest: _prepare holds most others)"
            + ("; then PostgreSQL's CPU in the step:" if server is not None else ":")
        )
        for name, seconds in spent.most_common():
            extra = f" {server[name] / n * 1e6:7.1f}" if server is not None else ""
            print(f"  {name:<32} {seconds / n * 1e6:7.1f}{extra}")
    finally:
        drop(Workspace(settings), Path(data_dir))
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
