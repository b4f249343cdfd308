"""Tracking endpoints over HTTP: events a second with verdicts and durable writes, against
a bare endpoint on the same server in the same run.

Setup (issue 7): a workspace with N recipients (default 20,000) of a started campaign
(the send benchmark's template: 20 tracked links), every outbox row marked sent an hour
before. The server is `carepost tracking serve` itself (same code path, a subprocess),
with CAREPOST_TRACKING_BENCHMARK_BARE_ROUTE on so that it also answers /t/bare/<token>:
the pixel, with no token check and no write. The load is `wrk` on the same machine with a
Lua script cycling through valid open and click tokens of real outbox rows (each message:
its open, three of its links, and for one in twenty its honeypot), with a mix of agents
(browsers, Gmail's image proxy, Apple's MPP agent, a link scanner) and client addresses
(X-Forwarded-For, which uvicorn trusts from loopback).

Measured after a warm-up, in `--rounds` pairs of phases of `--duration` seconds (the bare
route, then the full endpoints; alternating, so that other load on a shared machine falls
on both alike): events a second = rows written to engagement_events during the phase /
the phase's length (not responses), with p50/p99 latency from wrk; medians of the rounds.
The ratio is full events/s over bare responses/s, the median of the rounds' ratios.

    apt-get install -y wrk
    python tracking_http.py [--messages 20000] [--duration 10] [--rounds 3]
                            [--connections 64] [--workers 1] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from urllib.parse import quote

from _common import machine
from send_throughput import FIELDS, template_html
from sqlalchemy import create_engine, func, select, text, update

from carepost.audit.actor import Actor
from carepost.campaigns import service as campaigns
from carepost.config import Settings
from carepost.contacts.store import ContactInput, ContactWriter
from carepost.content.service import add_template
from carepost.content.template import TemplateSpec
from carepost.content.tokens import TokenSigner
from carepost.db import transaction
from carepost.delivery.models import OutboxMessage
from carepost.tracking.models import EngagementEvent
from carepost.workspace import Workspace, init_workspace

AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "Mozilla/5.0",  # Apple Mail Privacy Protection's bare agent
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Barracuda Sentinel (EE)",
)
LUA = r"""
-- Cycles through the valid tracking paths in PATHS_FILE (one a line), rotating agents and
-- client addresses. `wrk ... -- bare` asks for /t/bare/<token> instead (no check, no write).
local paths = {}
for line in io.lines(os.getenv("PATHS_FILE")) do paths[#paths + 1] = line end
local agents = {AGENTS}
local bare = false
local counter = 0
function init(args)
  bare = args[1] == "bare"
  counter = math.random(#paths)
end
function request()
  counter = counter + 1
  local path = paths[(counter % #paths) + 1]
  if bare then path = "/t/bare/" .. string.sub(path, 6) end
  local headers = {
    ["User-Agent"] = agents[(counter % #agents) + 1],
    ["X-Forwarded-For"] = "198.51." .. (counter % 200) .. "." .. (counter % 250 + 1),
  }
  return wrk.format("GET", path, headers)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_schema(base: str) -> tuple[str, str]:
    """A fresh schema, so the run leaves the database as it was."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}", schema


def drop_schema(base: str, schema: str) -> None:
    engine = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def seed(ws: Workspace, n: int, paths_file: Path, seed_value: int = 7) -> int:
    """n contacts, a started campaign (rows marked sent an hour ago) and the paths wrk
    cycles through. Returns the number of paths."""
    actor = Actor("bench", "cli", "bench")
    now = datetime.now(UTC)
    with transaction(ws.engine) as session:
        writer = ContactWriter(session, ws.keyring, now=now, source="bench")
        outcomes = writer.upsert_contacts(
            [
                ContactInput(
                    f"bench:{i}",
                    {
                        "v": 1,
                        "name": {"given": [f"Given{i}"], "family": "Bench"},
                        "emails": [f"patient{i}@sink.example"],
                    },
                    [("email", f"patient{i}@sink.example")],
                )
                for i in range(n)
            ]
        )
        ids = [o.contact_id for o in outcomes if o.contact_id]
        campaigns.add_sender(
            session,
            sender_id="bench-clinic",
            from_name="Bench Clinic",
            from_address="news@clinic.example",
            postal_address="1 Bench Way, Springfield MA",
            organization_name="Bench Clinic",
            actor=actor,
        )
        template = add_template(
            session,
            TemplateSpec("bench", "Clinic news", template_html(), "treatment", FIELDS),
            actor=actor,
        )
        campaign = campaigns.create_campaign(
            session,
            name="bench",
            segment="all",
            template_id=template.id,
            sender_id="bench-clinic",
            topic="news",
            actor=actor,
        )
        campaigns.start_campaign(
            session, campaign.id, members=ids, membership_ref="bench", actor=actor
        )
    with transaction(ws.engine) as session:
        session.execute(
            update(OutboxMessage).values(state="sent", updated_at=now - timedelta(hours=1))
        )
        outbox = session.scalars(select(OutboxMessage.id)).all()
    rng = random.Random(seed_value)
    signer = TokenSigner(ws.keyring)
    links = 20
    paths = []
    for mid in outbox:
        clicks, opened = signer.message_tokens(mid, links + 1)
        paths.append(f"/t/o/{opened}")
        for index in rng.sample(range(links), 3):
            paths.append(f"/t/c/{clicks[index]}")
        if rng.random() < 0.05:
            paths.append(f"/t/c/{clicks[links]}")  # the honeypot
    rng.shuffle(paths)
    paths_file.write_text("\n".join(paths) + "\n")
    return len(paths)


def rows(ws: Workspace) -> int:
    with transaction(ws.engine) as s:
        return int(s.scalar(select(func.count()).select_from(EngagementEvent)) or 0)


def verdicts_since(ws: Workspace, after_id: int) -> dict[str, int]:
    e = EngagementEvent
    with transaction(ws.engine) as s:
        found = s.execute(
            select(e.verdict, func.count()).where(e.id > after_id).group_by(e.verdict)
        ).all()
    return {verdict: int(count) for verdict, count in found}


def max_id(ws: Workspace) -> int:
    with transaction(ws.engine) as s:
        return int(s.scalar(select(func.max(EngagementEvent.id))) or 0)


def wrk(
    port: int, script: Path, paths_file: Path, seconds: int, conns: int, bare: bool
) -> dict[str, float]:
    command = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    if bare:
        command += ["--", "bare"]
    env = {**os.environ, "PATHS_FILE": str(paths_file)}
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if done is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    elapsed = float(done.group(2)) * (60.0 if done.group(3) == "m" else 1.0)
    result = {"requests": float(done.group(1)), "seconds": elapsed}
    for pct in ("50", "99"):
        lat = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if lat:
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[lat.group(2)]
            result[f"p{pct}_ms"] = float(lat.group(1)) * scale
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(bad.group(1)) if bad else 0.0
    sock = re.search(r"Socket errors: (.*)", out)
    failures = re.findall(r"\d+", sock.group(1)) if sock else []
    result["socket_errors"] = float(sum(map(int, failures)))
    return result


def start_server(data_dir: Path, url: str, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "CAREPOST_DATA_DIR": str(data_dir),
        "CAREPOST_DATABASE_URL": url,
        "CAREPOST_TRACKING_BENCHMARK_BARE_ROUTE": "true",
    }
    command = [sys.executable, "-m", "carepost.cli", "tracking", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("carepost tracking serve exited")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/t/bare/warm", timeout=1).close()
            return proc, port
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("carepost tracking serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds a phase")
    parser.add_argument("--rounds", type=int, default=3, help="bare and full phases, alternating")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--database-url", default="", help="PostgreSQL; default SQLite")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu)")
    folder = Path(tempfile.mkdtemp(prefix="carepost-bench-tracking-"))
    schema = None
    url = args.database_url
    if url:
        url, schema = pg_schema(args.database_url)
    else:
        url = f"sqlite:///{folder / 'carepost.db'}"
    ws = init_workspace(settings=Settings(data_dir=folder / "ws", database_url=url))
    proc = None
    try:
        paths_file = folder / "paths.txt"
        script = folder / "tracking.lua"
        agents = ", ".join(f'"{agent}"' for agent in AGENTS)
        script.write_text(LUA.replace("{AGENTS}", "{" + agents + "}"))
        started = time.perf_counter()
        n_paths = seed(ws, args.messages, paths_file)
        print(f"machine: {machine()}")
        print(f"date: {datetime.now(UTC):%Y-%m-%d}, load average before: {os.getloadavg()}")
        engine = "PostgreSQL" if args.database_url else "SQLite"
        print(
            f"{engine}, {args.messages} messages, {n_paths} distinct paths "
            f"(seeded in {time.perf_counter() - started:.0f} s); server: carepost tracking "
            f"serve --workers {args.workers}; wrk -t1 -c{args.connections} on the same machine"
        )
        proc, port = start_server(ws.settings.data_dir, url, args.workers)
        wrk(port, script, paths_file, args.warmup, args.connections, bare=False)
        first_id = max_id(ws)
        bares, fulls = [], []
        # Alternating phases, so that other load on a shared machine falls on both alike.
        for _ in range(args.rounds):
            bare = wrk(port, script, paths_file, args.duration, args.connections, bare=True)
            bares.append({**bare, "rate": bare["requests"] / bare["seconds"]})
            time.sleep(1)
            before = rows(ws)
            full = wrk(port, script, paths_file, args.duration, args.connections, bare=False)
            time.sleep(1)  # requests in flight when wrk stopped finish their batches
            written = rows(ws) - before
            fulls.append({**full, "rate": written / full["seconds"]})
            time.sleep(1)
        mix = verdicts_since(ws, first_id)
        for name, phases, unit in (
            ("bare /t/bare/ ", bares, "responses/s"),
            ("full /t/o /t/c", fulls, "events/s written"),
        ):
            errors = sum(p["errors"] + p["socket_errors"] for p in phases)
            print(
                f"{name}: {median(p['rate'] for p in phases):6.0f} {unit} (rounds: "
                + ", ".join(f"{p['rate']:.0f}" for p in phases)
                + f")   p50 {median(p['p50_ms'] for p in phases):.2f} ms"
                f"   p99 {median(p['p99_ms'] for p in phases):.2f} ms   errors {errors:.0f}"
            )
        ratios = [f["rate"] / b["rate"] for b, f in zip(bares, fulls, strict=True)]
        events_rate = median(f["rate"] for f in fulls)
        print(f"verdicts written: {mix}")
        print(
            f"ratio full/bare: {median(ratios):.2f} (median of the rounds' ratios: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + ")"
        )
        print(f"load average after: {os.getloadavg()}")
        print("goal >= 3,000 events/s:", "met" if events_rate >= 3000 else "NOT met")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        ws.close()
        if schema:
            drop_schema(args.database_url, schema)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
