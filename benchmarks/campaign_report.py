"""The campaign report over a large campaign: N recipients (default 20,000) and about
E engagement events (default 100,000), with bounces, complaints and opt-outs.

Setup, through the real paths: contacts written encrypted (ContactWriter), a saved
segment with three top-level clauses, `campaign start` (freeze + outbox), the worker
sending every message through the null transport (so the outbox, transitions, gate
decisions and delivery attempts with recipient domains are the worker's own), DSNs and
ARF complaints through the inbound service, opt-outs through the consent service, and
opens and clicks written with tracking's record_tracked (a realistic mix: Apple MPP
machine opens, human opens and clicks, scanner bursts on every link with honeypot hits,
over three days). The domain mix has a few large providers and many small practices.

Timed: `reports.service.campaign_report` without and with the segment clause split (the
split decrypts the recipients' records: its cost is the snapshot), median of --runs; and
`carepost report campaign ID --json --csv F --chart F` as a process (median of 3).

    python benchmarks/campaign_report.py [--recipients 20000] [--events 100000] [--runs 5]
        [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from random import Random

from _common import drop, fresh_workspace, machine, median_of
from sqlalchemy import func, select

from carepost.audit.actor import Actor
from carepost.bounces import inbound
from carepost.campaigns import service as campaigns
from carepost.campaigns.commands import start
from carepost.consent import service as consent
from carepost.contacts.store import ContactInput, ContactWriter
from carepost.content.service import add_template
from carepost.content.template import TemplateSpec
from carepost.db import transaction
from carepost.delivery.models import DeliveryAttempt, OutboxMessage
from carepost.delivery.null import NullTransport
from carepost.delivery.worker import Worker, WorkerConfig
from carepost.reports import service
from carepost.segments.service import save_segment
from carepost.tracking.models import EngagementEvent
from carepost.tracking.service import TrackedEvent, record_tracked
from carepost.workspace import Workspace

ACTOR = Actor("bench", "cli", "bench")
RULE = 'state == "MA" or state == "NH" or age >= 65'
LINKS = 5
BIG = (("gmail.com", 0.38), ("yahoo.com", 0.14), ("outlook.com", 0.12), ("icloud.com", 0.08))
HTML = (
    "<html><body><p>Dear {{ first_name }},</p>"
    + "".join(
        f'<p><a href="https://clinic.example/page/{i}">Topic {i}</a></p>' for i in range(LINKS)
    )
    + '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ sender_postal_address }}</p>'
    "</body></html>"
)


def domain_of(rng: Random) -> str:
    r = rng.random()
    for name, share in BIG:
        if r < share:
            return name
        r -= share
    # the rest: 600 small practices and local providers, a few dozen addresses each
    return f"practice{rng.randrange(600)}.example"


def setup(ws: Workspace, n: int, rng: Random) -> str:
    now = datetime.now(UTC)
    inputs = []
    for i in range(n):
        email = f"patient{i}@{domain_of(rng)}"
        state = rng.choice(("MA", "MA", "NH", "ME", "VT"))
        born = rng.randrange(1935, 2000) if state in ("MA", "NH") else rng.randrange(1930, 1960)
        inputs.append(
            ContactInput(
                f"bench:{i}",
                {
                    "v": 1,
                    "name": {"given": [f"Given{i}"], "family": f"Family{i % 977}"},
                    "emails": [email],
                    "birth_date": f"{born}-0{1 + i % 9}-1{i % 10}",
                    "address": {"state": state},
                },
                [("email", email)],
            )
        )
    for start_at in range(0, n, 5000):
        with transaction(ws.engine) as session:
            ContactWriter(session, ws.keyring, now=now, source="bench").upsert_contacts(
                inputs[start_at : start_at + 5000]
            )
    with transaction(ws.engine) as session:
        campaigns.add_sender(
            session,
            sender_id="bench-clinic",
            from_name="Bench Clinic",
            from_address="news@clinic.example",
            return_path="bounces@clinic.example",
            postal_address="1 Bench Way, Springfield MA",
            organization_name="Bench Clinic",
            actor=ACTOR,
        )
        template = add_template(
            session,
            TemplateSpec("bench", "Clinic news", HTML, "operations", ("first_name",)),
            actor=ACTOR,
        )
        save_segment(session, "bench-audience", RULE, actor=ACTOR)
        campaign = campaigns.create_campaign(
            session,
            name="bench",
            segment="bench-audience",
            template_id=template.id,
            sender_id="bench-clinic",
            topic="news",
            actor=ACTOR,
        )
    start(ws, campaign.id, ACTOR)
    return campaign.id


def send(ws: Workspace) -> float:
    worker = Worker(
        ws.engine,
        ws.keyring,
        NullTransport(),
        WorkerConfig(batch_size=500, public_url="https://mail.clinic.example"),
        name="bench",
    )
    started = time.perf_counter()
    worker.run(until_idle=True)
    return time.perf_counter() - started


def dsn(message_id: str, status: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example\r\nTo: bounces@clinic.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nbounced\r\n\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
        "Final-Recipient: rfc822; someone@example.org\r\nAction: failed\r\n"
        f"Status: {status}\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: news@clinic.example\r\nMessage-ID: {message_id}\r\nSubject: Clinic news\r\n\r\n"
        "--B--\r\n"
    ).encode()


def arf(message_id: str) -> bytes:
    return (
        "From: feedback@isp.example\r\nTo: abuse@clinic.example\r\nSubject: FW: Clinic news\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; "
        'boundary="F"\r\n\r\n--F\r\nContent-Type: text/plain\r\n\r\nabuse report\r\n\r\n'
        "--F\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
        "User-Agent: Bench/1.0\r\nVersion: 1\r\n\r\n--F\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: news@clinic.example\r\nMessage-ID: {message_id}\r\nSubject: Clinic news\r\n\r\n"
        "Hello.\r\n--F--\r\n"
    ).encode()


def aftermath(ws: Workspace, campaign_id: str, events: int, rng: Random) -> dict[str, int]:
    """Bounces, complaints, opt-outs and about `events` opens and clicks."""
    with transaction(ws.engine) as session:
        sent = session.execute(
            select(OutboxMessage.id, OutboxMessage.contact_id, DeliveryAttempt.message_id)
            .join(DeliveryAttempt, DeliveryAttempt.outbox_id == OutboxMessage.id)
            .where(OutboxMessage.campaign_id == campaign_id, OutboxMessage.state == "sent")
            .order_by(OutboxMessage.id)
        ).all()
    t0 = datetime.now(UTC)
    picks = rng.sample(range(len(sent)), 260)
    with transaction(ws.engine) as session:
        for k, i in enumerate(picks[:240]):
            status = "5.1.1" if k % 3 else "5.2.2"
            inbound.receive(
                session,
                ws.keyring,
                dsn(sent[i][2], status),
                rcpt_tos=["bounces@clinic.example"],
                actor=ACTOR,
            )
        for i in picks[240:]:
            inbound.receive(
                session, ws.keyring, arf(sent[i][2]), rcpt_tos=["abuse@clinic.example"], actor=ACTOR
            )
        for i in rng.sample(range(len(sent)), 150):
            consent.set_consent(
                session,
                contact_id=sent[i][1],
                channel="email",
                topic="news",
                status="opted_out",
                source="unsubscribe_link",
                actor=ACTOR,
            )
    rows: list[TrackedEvent] = []

    def add(i: int, kind: str, verdict: str, reason: str, minutes: float, link: int | None) -> None:
        outbox_id, contact_id, _ = sent[i]
        rows.append(
            TrackedEvent(
                contact_id,
                outbox_id,
                campaign_id,
                kind,
                link,
                verdict,
                reason,
                0.9,
                "203.0.113.0/24",
                t0 + timedelta(minutes=minutes),
            )
        )

    while len(rows) < events:
        i = rng.randrange(len(sent))
        r = rng.random()
        if r < 0.35:  # Apple MPP: a machine open minutes after delivery, often twice
            for _ in range(rng.choice((1, 1, 2))):
                add(i, "open", "machine", "apple_mpp", rng.uniform(0, 30), None)
        elif r < 0.80:  # a person: opens over three days, sometimes a click
            at = rng.expovariate(1 / 600)
            for _ in range(rng.choice((1, 1, 2, 3))):
                add(i, "open", "human", "no_machine_signal", min(at, 4300), None)
                at += rng.uniform(1, 300)
            if rng.random() < 0.25:
                add(i, "click", "human", "no_machine_signal", min(at, 4310), rng.randrange(LINKS))
        else:  # a link scanner: every link and the honeypot within a second
            at = rng.uniform(0, 5)
            for link in range(LINKS + 1):
                add(i, "click", "machine", "all_links_burst", at, link)
    for start_at in range(0, len(rows), 20_000):
        with transaction(ws.engine) as session:
            record_tracked(session, rows[start_at : start_at + 20_000])
    with transaction(ws.engine) as session:
        total = session.scalar(select(func.count()).select_from(EngagementEvent)) or 0
    return {"events": int(total), "bounces": 240, "complaints": 20, "opt_outs": 150}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    rng = Random(7)
    ws, folder = fresh_workspace(args.database_url)
    try:
        t = time.perf_counter()
        campaign_id = setup(ws, args.recipients, rng)
        setup_s = time.perf_counter() - t
        send_s = send(ws)
        made = aftermath(ws, campaign_id, args.events, rng)
        print(f"machine: {machine()}")
        print(f"database: {ws.engine.dialect.name}")
        print(
            f"setup: {args.recipients} recipients in {setup_s:.1f} s; sent (null transport) in "
            f"{send_s:.1f} s; {made}"
        )

        def timed(**options: object) -> float:
            t = time.perf_counter()
            report = service.campaign_report(
                ws.engine,
                ws.keyring,
                campaign_id,
                options=service.Options(**options),  # type: ignore[arg-type]
                actor=ACTOR,
            )
            elapsed = time.perf_counter() - t
            assert report.delivery.recipients == args.recipients
            return elapsed

        timed(clauses=False)  # warm the caches once, as a running system would have them
        plain, plain_all = median_of(args.runs, lambda: timed(clauses=False))
        with_clauses, clauses_all = median_of(args.runs, lambda: timed(clauses=True))
        env = {
            **os.environ,
            "CAREPOST_DATA_DIR": str(ws.settings.data_dir),
            "CAREPOST_DATABASE_URL": ws.settings.database_url,
        }

        def cli() -> float:
            t = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "carepost.cli",
                    "report",
                    "campaign",
                    campaign_id,
                    "--json",
                    "--csv",
                    str(folder / "r.csv"),
                    "--chart",
                    str(folder / "r.svg"),
                ],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            return time.perf_counter() - t

        whole, whole_all = median_of(3, cli)
        print(
            f"report without the clause split: median {plain * 1000:.0f} ms "
            f"(runs: {', '.join(f'{x * 1000:.0f}' for x in plain_all)})"
        )
        runs = ", ".join(f"{x * 1000:.0f}" for x in clauses_all)
        print(
            f"report with the clause split (snapshot of {args.recipients} recipients): median "
            f"{with_clauses * 1000:.0f} ms (runs: {runs})"
        )
        print(
            f"`carepost report campaign --json --csv --chart` as a process: median "
            f"{whole:.2f} s (runs: {', '.join(f'{x:.2f}' for x in whole_all)})"
        )
        sizes = {name: (folder / name).stat().st_size for name in ("r.csv", "r.svg")}
        print(f"CSV {sizes['r.csv']} bytes, SVG {sizes['r.svg']} bytes")
    finally:
        drop(ws, folder)


if __name__ == "__main__":
    main()
