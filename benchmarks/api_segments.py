"""The REST API's segment counts on N generated contacts (default 30,000: above the
20,000 where the snapshot build forks its two decrypt processes, so the fork happens
inside the serving process, beside uvicorn's threads): the first count (which builds
the API process's snapshot), warm counts over HTTP, and the process's resident memory
before and after.

    python benchmarks/api_segments.py [--contacts 30000] [--runs 20] [--database-url URL]

Plain HTTP on loopback (TLS is not what is measured); one uvicorn server in this
process, as `carepost serve` runs it.

Anchor (same run, same server and key): `GET /api/v1/me`, the API's floor (key check,
rate limit, audit of the key's use, JSON answer) without any segment work. The ratio is
what a warm count costs over any authenticated call.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import uvicorn
from _common import drop, fresh_workspace, machine

from carepost.audit.actor import Actor
from carepost.contacts.population import write_population
from carepost.db import transaction
from carepost.staff import apikeys, service
from carepost.staff.permissions import BUILTIN_ROLES
from carepost.staff.principal import Principal
from carepost.web.app import create_app
from carepost.web.commands import server_config

RULE = 'age >= 50 and has_condition("diabetes") and not vaccinated("influenza", within=365d)'
SYSTEM = Principal.system(Actor("bench", "cli", "bench"))


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    ws, folder = fresh_workspace(args.database_url)
    try:
        started = time.perf_counter()
        for first in range(0, args.contacts, 50_000):
            with transaction(ws.engine) as session:
                write_population(
                    session,
                    ws.keyring,
                    contacts=min(50_000, args.contacts - first),
                    start=first,
                    seed=42,
                    as_of=date(2026, 11, 24),
                    actor=SYSTEM.actor,
                    now=datetime.now(UTC),
                )
        print(f"population: {args.contacts} contacts in {time.perf_counter() - started:.1f} s")
        with transaction(ws.engine) as session:
            user = service.do_add_user(
                session,
                ws.keyring,
                SYSTEM,
                email="bench@clinic.example",
                display_name="Bench",
                roles=["marketer"],
                kind="service",
            )
            token = apikeys.do_create_api_key(
                session,
                SYSTEM,
                owner=user.id,
                name="bench",
                scopes=sorted(BUILTIN_ROLES["marketer"][1]),
            ).token
        server = uvicorn.Server(server_config(create_app(ws), "127.0.0.1", 0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        before = rss_mib()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=600,
        ) as c:

            def count() -> tuple[float, int]:
                t = time.perf_counter()
                answer = c.post("/segments/count", json={"rule": RULE})
                answer.raise_for_status()
                return time.perf_counter() - t, int(answer.json()["count"])

            def me() -> float:
                t = time.perf_counter()
                c.get("/me").raise_for_status()
                return time.perf_counter() - t

            cold, n = count()
            after_build = rss_mib()
            warm = sorted(count()[0] for _ in range(args.runs))
            floor = sorted(me() for _ in range(args.runs))
        server.should_exit = True
        thread.join(10)
        engine = ws.engine.dialect.name
        print(machine())
        print(f"engine {engine}, rule matches {n} of {args.contacts}")
        print(f"first count (builds the snapshot): {cold:.2f} s")
        print(
            f"warm count over HTTP: median {statistics.median(warm) * 1000:.1f} ms, "
            f"max {warm[-1] * 1000:.1f} ms ({args.runs} runs)"
        )
        print(
            f"anchor GET /me: median {statistics.median(floor) * 1000:.1f} ms; ratio warm "
            f"count/anchor: {statistics.median(warm) / statistics.median(floor):.1f}x"
        )
        print(f"resident memory: {before:.0f} MiB before, {after_build:.0f} MiB after the build")
    finally:
        drop(ws, folder)


if __name__ == "__main__":
    main()
