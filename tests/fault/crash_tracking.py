"""Kill -9 the tracking server again and again under load; no acknowledged event may be lost.

The claim under test (issue 7): events are written durably, and a response (200 for the
pixel, 302 for a click) is sent only after the event's batch committed, so a process that
dies after answering has lost nothing. A real `carepost tracking serve` process is loaded
by a client in this process that requests every event once (many outbox rows x {open,
each link, the honeypot}: each (message, kind, link) is identifiable) over 32 keep-alive
connections and notes which requests were acknowledged. The server is killed with SIGKILL
at random moments, restarted, and the client goes on with the events not yet requested
(those in flight at the kill are not retried). At the end every acknowledged event must be
in the database, none twice. Events stored but never acknowledged (committed, then the
process died before answering) are allowed and counted: a client would retry them.

CI runs it at reduced counts (tests/integration/test_tracking_crash.py). Full counts, by
hand, from the project root:

    .venv/bin/python tests/fault/crash_tracking.py --messages 10000 --kills 20
    .venv/bin/python tests/fault/crash_tracking.py --messages 10000 --kills 20 \\
        --database-url postgresql://postgres@127.0.0.1:5432/carepost_test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for folder in (TESTS, TESTS / "fault"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from crash_worker import drop_schema, pg_schema_url  # noqa: E402
from sqlalchemy import select  # noqa: E402

from carepost.audit.actor import Actor  # noqa: E402
from carepost.config import Settings  # noqa: E402
from carepost.db import transaction  # noqa: E402
from carepost.tracking.models import EngagementEvent  # noqa: E402
from carepost.workspace import init_workspace  # noqa: E402
from smtp_sink import free_port  # noqa: E402
from tracking_support import CHROME, Messages, sent_campaign  # noqa: E402

CONNECTIONS = 32
Key = tuple[str, str, int | None]  # message id, kind, link index (None for an open)


@dataclass
class CrashReport:
    requested: int
    acknowledged: int
    stored: int
    lost: int  # acknowledged but not stored: must be 0
    duplicates: int  # stored twice: must be 0 (each event was requested once)
    stored_unacknowledged: int  # committed, but the answer died with the process
    kills: int
    lives: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.acknowledged > 0


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {CHROME}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _connection(
    port: int, todo: deque[tuple[Key, str]], acked: set[Key], requested: list[Key]
) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    try:
        while todo:
            key, path = todo.popleft()
            requested.append(key)
            try:
                status = await _request(reader, writer, path)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                return  # the server died with this request in flight: not acknowledged
            if status in (200, 302):
                acked.add(key)
    finally:
        writer.close()


async def _load(
    port: int, todo: deque[tuple[Key, str]], acked: set[Key], requested: list[Key]
) -> None:
    await asyncio.gather(*(_connection(port, todo, acked, requested) for _ in range(CONNECTIONS)))


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tracking server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("tracking server did not start")


def _events(m: Messages) -> list[tuple[Key, str]]:
    events: list[tuple[Key, str]] = []
    for mid in m.ids:
        events.append(((mid, "open", None), f"/t/o/{m.open(mid)}"))
        for i in range(len(m.links) + 1):  # every link and the honeypot
            events.append(((mid, "click", i), f"/t/c/{m.click(mid, i)}"))
    return events


def run(db_url: str, messages: int, kills: int, seed: int, workdir: Path) -> CrashReport:
    rng = random.Random(seed)
    ws = init_workspace(settings=Settings(data_dir=workdir / "ws", database_url=db_url))
    started = time.perf_counter()
    try:
        events = _events(sent_campaign(ws, Actor("cli:crash-test", "cli", "test"), messages))
        rng.shuffle(events)
        todo = deque(events)
        env = {
            **os.environ,
            "CAREPOST_DATA_DIR": str(ws.settings.data_dir),
            "CAREPOST_DATABASE_URL": db_url,
        }
        acked: set[Key] = set()
        requested: list[Key] = []
        done = lives = 0
        while todo:
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "carepost.cli", "tracking", "serve", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            lives += 1
            try:
                _wait_listening(port, proc)
                if done < kills:
                    # Kill after a random share of what is left over the kills still to
                    # land: each life ends with events to spare, however fast it serves.
                    share = max(1, len(todo) // (kills - done + 1))
                    target = rng.randint(max(1, share // 4), share)
                    done += asyncio.run(
                        _life_until_killed(port, todo, acked, requested, proc, target)
                    )
                else:
                    asyncio.run(_load(port, todo, acked, requested))
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                proc.wait()
        with transaction(ws.engine) as s:
            rows = s.execute(
                select(EngagementEvent.message_id, EngagementEvent.kind, EngagementEvent.link_index)
            ).all()
        stored = Counter((mid, kind, index) for mid, kind, index in rows)
        return CrashReport(
            requested=len(requested),
            acknowledged=len(acked),
            stored=len(stored),
            lost=len(acked - set(stored)),
            duplicates=sum(n - 1 for n in stored.values()),
            stored_unacknowledged=len(set(stored) - acked),
            kills=done,
            lives=lives,
            seconds=time.perf_counter() - started,
        )
    finally:
        ws.close()


async def _life_until_killed(
    port: int,
    todo: deque[tuple[Key, str]],
    acked: set[Key],
    requested: list[Key],
    proc: subprocess.Popen[bytes],
    target: int,
) -> int:
    """Load the server and SIGKILL it once `target` more requests have gone out, while
    others are in flight (a moment set by progress, not by the clock, so a fast or a
    slow machine kills as often); 1 if the kill landed under load, 0 if the events ran
    out first."""
    first = len(requested)
    load = asyncio.ensure_future(_load(port, todo, acked, requested))
    while not load.done() and len(requested) - first < target:
        await asyncio.sleep(0.002)
    landed = 0 if load.done() else 1
    os.kill(proc.pid, signal.SIGKILL)
    await load
    return landed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default="", help="PostgreSQL; default SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="carepost-crash-tracking-") as tmp:
        workdir = Path(tmp)
        schema = None
        url = args.database_url
        if url:
            url, schema = pg_schema_url(args.database_url)
        else:
            url = f"sqlite:///{workdir / 'crash.db'}"
        try:
            report = run(url, args.messages, args.kills, args.seed, workdir)
        finally:
            if schema:
                drop_schema(args.database_url, schema)
    engine = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"{engine}: {args.messages} messages, {report.requested} events requested, "
        f"{report.kills} kills (SIGKILL) over {report.lives} server lives, {report.seconds:.0f} s"
    )
    print(
        f"  acknowledged {report.acknowledged}, stored {report.stored}, lost {report.lost}, "
        f"duplicates {report.duplicates}, stored but not acknowledged "
        f"{report.stored_unacknowledged}"
    )
    all_kills = report.kills == args.kills
    if not all_kills:
        print(f"  only {report.kills} of {args.kills} kills landed before the events ran out")
    print("  OK" if report.ok and all_kills else "  FAILED")
    sys.exit(0 if report.ok and all_kills else 1)


if __name__ == "__main__":
    main()
