"""One-off message latency while a big campaign sends (issue 9): from just before
`POST /api/v1/messages` to the SMTP sink receiving the message.

Set-up: the send benchmark's campaign (send_throughput.setup: N authorized recipients, a
~20 KB HTML template with ten PHI fields and twenty links, DKIM RSA-2048, a marketing
campaign, batches of 500, 32 connections) plus `--one-off` contacts at another domain,
a treatment template with two `data_<name>` fields, and a care-team API key. Processes:
the real worker (one), the real web app under uvicorn over HTTPS on loopback (one), an
aiosmtpd sink with STARTTLS (one; it notes the arrival time of each one-off message by
its Message-ID, which is `<outbox id@domain>`, and counts the campaign's), and this
driver, which waits until the campaign is sending, then POSTs at `--rate` a second for
`--seconds` (or until the campaign has sent everything), each with a fresh contact and
data. Latency = sink arrival time - time just before the POST, same clock. Also shown:
the POST's own round trip and the campaign's rate at the sink during the window.

Anchor (same run, right after the window, the campaign still sending): the same path
without carepost, i.e. this driver hands a message of the one-off's size straight to the
sink over a fresh SMTP connection with STARTTLS (smtplib), `--anchor` of them at the same
rate; latency = sink arrival - time before connecting. What carepost adds over it: the
API call, the gate, the outbox row, the worker's claim, composing and DKIM signing.

Not run by CI (a file under benchmarks/, not tests/).

    python api_message_latency.py [--recipients 100000] [--rate 5] [--seconds 60]
                                  [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import ssl
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty
from typing import Any

import httpx
from _common import drop, machine
from send_throughput import BATCH, CONCURRENCY, SENDER, free_port, setup

from carepost.audit.actor import Actor
from carepost.config import Settings
from carepost.contacts.store import ContactInput, ContactWriter
from carepost.content.service import add_template
from carepost.content.template import TemplateSpec
from carepost.db import transaction
from carepost.delivery import capture
from carepost.workspace import Workspace, open_workspace

ONE_OFF_DOMAIN = b"oneoff.example"
LAB_HTML = (
    "<html><body><p>Dear {{ first_name }},</p><p>Your {{ data_test_name }} result is "
    "ready in the portal (reference {{ data_reference }}).</p></body></html>"
)


# --- the sink (its own process) ----------------------------------------------------------
def run_sink(port: int, cert: str, key: str, counted: Any, arrivals: Any, stop: Any) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP, Envelope, Session

    class Handler:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            now = time.time()
            rcpt = envelope.rcpt_tos[0].encode() if envelope.rcpt_tos else b""
            if rcpt.endswith(b"@" + ONE_OFF_DOMAIN):
                data = bytes(envelope.original_content or b"")
                head = data.split(b"\r\n\r\n", 1)[0]
                for line in head.split(b"\r\n"):
                    if line[:11].lower() == b"message-id:":
                        arrivals.put((line[11:].strip().decode(), now))
                        break
            else:
                with counted.get_lock():
                    counted.value += 1
            return "250 2.0.0 Ok: queued"

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=ctx,
        require_starttls=True,
        server_hostname="sink.bench",
        data_size_limit=0,
    )
    controller.start()
    stop.wait()
    controller.stop()


# --- the API (its own process) -----------------------------------------------------------
def run_api(data_dir: str, url: str, port: int, cert: str, key: str) -> None:
    import uvicorn

    from carepost.web.app import create_app
    from carepost.web.commands import server_config

    ws = open_workspace(settings=Settings(data_dir=Path(data_dir), database_url=url))
    uvicorn.Server(
        server_config(create_app(ws), "127.0.0.1", port, Path(cert), Path(key), "warning")
    ).run()


# --- the worker (its own process) --------------------------------------------------------
def run_worker(data_dir: str, url: str, port: int, ca: str, sub_batch: int) -> None:
    from carepost.delivery.smtp import RelayConfig, SmtpTransport
    from carepost.delivery.worker import Worker, WorkerConfig

    ws = open_workspace(settings=Settings(data_dir=Path(data_dir), database_url=url))
    relay = RelayConfig(
        "127.0.0.1",
        port,
        tls_context=ssl.create_default_context(cafile=ca),
        pool_size=CONCURRENCY,
        max_messages_per_connection=1000,
        timeout=30,
    )
    worker = Worker(
        ws.engine,
        ws.keyring,
        SmtpTransport(relay),
        WorkerConfig(
            batch_size=BATCH,
            concurrency=CONCURRENCY,
            lease=timedelta(minutes=10),
            public_url="https://mail.clinic.example",
            sub_batch=sub_batch,
        ),
        name="bench-latency",
    )
    # Not until idle: one-off messages may still come after the campaign's last batch.
    worker.run(until_idle=False, idle_sleep=1.0)


# --- set-up ------------------------------------------------------------------------------
def add_one_off_parts(data_dir: str, url: str, n: int) -> tuple[list[str], str]:
    """n contacts at the one-off domain, the lab-result template and a care-team key."""
    from carepost.staff import apikeys, service
    from carepost.staff.permissions import BUILTIN_ROLES
    from carepost.staff.principal import Principal

    ws = open_workspace(settings=Settings(data_dir=Path(data_dir), database_url=url))
    actor = Actor("bench", "cli", "bench")
    system = Principal.system(actor)
    with transaction(ws.engine) as session:
        writer = ContactWriter(session, ws.keyring, now=datetime.now(UTC), source="bench-1off")
        outcomes = writer.upsert_contacts(
            [
                ContactInput(
                    f"bench-1off:{i}",
                    {
                        "v": 1,
                        "name": {"given": [f"Once{i}"], "family": "Synthetic"},
                        "emails": [f"p{i}@{ONE_OFF_DOMAIN.decode()}"],
                    },
                    [("email", f"p{i}@{ONE_OFF_DOMAIN.decode()}")],
                )
                for i in range(n)
            ]
        )
        add_template(
            session,
            TemplateSpec(
                "lab-result",
                "Your results are ready",
                LAB_HTML,
                "treatment",
                ("first_name", "data_test_name", "data_reference"),
            ),
            actor=actor,
        )
        user = service.do_add_user(
            session,
            ws.keyring,
            system,
            email="care@clinic.example",
            display_name="Care",
            roles=["care_team"],
            kind="service",
        )
        created = apikeys.do_create_api_key(
            session,
            system,
            owner=user.id,
            name="bench",
            scopes=sorted(BUILTIN_ROLES["care_team"][1]),
        )
    ws.close()
    return [o.contact_id for o in outcomes if o.contact_id], created.token


# --- the driver --------------------------------------------------------------------------
async def post_steadily(
    base: str, ca: str, token: str, contacts: list[str], rate: float, seconds: float, done: Any
) -> list[tuple[str, float, float]]:
    """(message id, time before the POST, POST round trip) per message, at `rate`."""
    sent: list[tuple[str, float, float]] = []
    ctx = ssl.create_default_context(cafile=ca)
    async with httpx.AsyncClient(
        base_url=base, verify=ctx, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        tasks = []

        async def one(i: int) -> None:
            before = time.time()
            answer = await client.post(
                "/api/v1/messages",
                json={
                    "contact_id": contacts[i],
                    "template": "lab-result",
                    "message_class": "treatment",
                    "sender": SENDER,
                    "data": {"test_name": "HbA1c", "reference": f"R{i:06d}"},
                },
                headers={"Idempotency-Key": f"bench-{i}"},
            )
            assert answer.status_code == 202, answer.text
            sent.append((answer.json()["id"], before, time.time() - before))

        start = time.monotonic()
        for i in range(min(len(contacts), int(rate * seconds))):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if done():
                break
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return sent


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def direct_smtp(port: int, ca: str, n: int, rate: float) -> list[tuple[str, float]]:
    """The anchor: `n` messages handed straight to the sink; (Message-ID, time before)."""
    import smtplib
    from email.message import EmailMessage

    tls = ssl.create_default_context(cafile=ca)
    tls.check_hostname = False  # the sink's certificate names sink.bench, not 127.0.0.1
    body = "Your lab result is ready in the portal. " * 25  # about a one-off's size
    sent: list[tuple[str, float]] = []
    start = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        msg = EmailMessage()
        msg["From"] = "care@clinic.example"
        msg["To"] = f"anchor{i}@{ONE_OFF_DOMAIN.decode()}"
        msg["Subject"] = "Your result is ready"
        msg["Message-ID"] = f"<anchor-{i}@clinic.example>"
        msg.set_content(body)
        before = time.time()
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.starttls(context=tls)
            smtp.send_message(msg)
        sent.append((f"anchor-{i}", before))
    return sent


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=5.0, help="one-off POSTs a second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=int, default=2000, help="campaign messages first")
    parser.add_argument("--anchor", type=int, default=100, help="direct SMTP hand-offs")
    parser.add_argument("--database-url", default="")
    parser.add_argument(
        "--sub-batch", type=int, default=250, help=f"worker parts (of {BATCH}-row batches)"
    )
    args = parser.parse_args()
    n_one_off = int(args.rate * args.seconds) + 10
    folder = Path(tempfile.mkdtemp(prefix="carepost-latency-"))
    files = capture.ensure_tls(folder)
    ctx = multiprocessing.get_context("spawn")
    counted = ctx.Value("q", 0)
    arrivals = ctx.Queue()
    stop_sink = ctx.Event()
    procs: list[Any] = []
    data_dir, url = "", ""
    try:
        t0 = time.perf_counter()
        data_dir, url, _ = setup(args.database_url, folder, args.recipients)
        contacts, token = add_one_off_parts(data_dir, url, n_one_off)
        print(f"machine: {machine()}")
        print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
        print(f"worker: batches of {BATCH}, parts of {args.sub_batch}, {CONCURRENCY} connections")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(
            f"setup ({args.recipients} authorized contacts, campaign started, "
            f"{n_one_off} one-off contacts): {time.perf_counter() - t0:.0f} s"
        )
        sink_port, api_port = free_port(), free_port()
        sink = ctx.Process(
            target=run_sink,
            args=(sink_port, str(files.cert), str(files.key), counted, arrivals, stop_sink),
        )
        api = ctx.Process(
            target=run_api, args=(data_dir, url, api_port, str(files.cert), str(files.key))
        )
        for proc in (sink, api):
            proc.start()
            procs.append(proc)
        base = f"https://127.0.0.1:{api_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/api/v1/openapi.json", verify=str(files.ca), timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.2)
        worker = ctx.Process(
            target=run_worker, args=(data_dir, url, sink_port, str(files.ca), args.sub_batch)
        )
        worker.start()
        procs.append(worker)
        w0 = time.monotonic()
        while counted.value < min(args.warmup, args.recipients // 2):
            assert worker.is_alive(), "the worker died"
            time.sleep(0.05)
        print(
            f"campaign warm-up: {counted.value} messages at the sink after "
            f"{time.monotonic() - w0:.1f} s"
        )
        c0, m0 = counted.value, time.monotonic()
        cpu0 = cpu_seconds(worker.pid)
        load0 = os.getloadavg()
        sent = asyncio.run(
            post_steadily(
                base,
                str(files.ca),
                token,
                contacts,
                args.rate,
                args.seconds,
                lambda: counted.value >= args.recipients,
            )
        )
        c1, m1 = counted.value, time.monotonic()
        cpu1 = cpu_seconds(worker.pid)
        load1 = os.getloadavg()
        anchored = direct_smtp(sink_port, str(files.ca), args.anchor, args.rate)
        still_sending = counted.value < args.recipients
        received: dict[str, float] = {}
        wanted = {mid for mid, _, _ in sent} | {mid for mid, _ in anchored}
        deadline = time.monotonic() + 60
        while len(received) < len(wanted) and time.monotonic() < deadline:
            try:
                message_id, at = arrivals.get(timeout=1)
            except Empty:
                continue
            received[message_id.strip("<>").split("@", 1)[0]] = at
        latencies = [received[mid] - before for mid, before, _ in sent if mid in received]
        direct = [received[mid] - before for mid, before in anchored if mid in received]
        posts = [rtt for _, _, rtt in sent]
        campaign_rate = (c1 - c0) / (m1 - m0)
        kind = "PostgreSQL" if args.database_url else "SQLite"
        print(
            f"{kind}: {len(sent)} one-off messages POSTed at {args.rate}/s over "
            f"{m1 - m0:.1f} s while the campaign sent {c1 - c0} messages "
            f"({campaign_rate:,.0f} msg/s at the sink); received {len(latencies)}"
        )
        print(
            f"worker CPU in the window: {(cpu1 - cpu0) / max(1, c1 - c0) * 1e6:,.0f} µs a "
            "campaign message (its one-off messages included): the figure other load on "
            "the machine does not move much"
        )
        if latencies:
            print(
                "API call -> SMTP sink, s: "
                f"p50 {statistics.median(latencies):.3f}  p95 {pct(latencies, 95):.3f}  "
                f"p99 {pct(latencies, 99):.3f}  max {max(latencies):.3f}"
            )
            print(
                "POST round trip alone, s: "
                f"p50 {statistics.median(posts):.3f}  p95 {pct(posts, 95):.3f}  "
                f"p99 {pct(posts, 99):.3f}  max {max(posts):.3f}"
            )
        if direct and latencies:
            print(
                f"anchor, direct SMTP hand-off ({len(direct)}, campaign "
                f"{'still sending' if still_sending else 'done by then'}), s: "
                f"p50 {statistics.median(direct):.3f}  p95 {pct(direct, 95):.3f}  "
                f"p99 {pct(direct, 99):.3f}  max {max(direct):.3f}"
            )
            print(f"ratio carepost/anchor at p99: {pct(latencies, 99) / pct(direct, 99):.1f}x")
        print(
            "load average at start and end of the window: "
            f"{' '.join(f'{x:.2f}' for x in load0)} / {' '.join(f'{x:.2f}' for x in load1)} "
            f"({os.cpu_count()} cores shared with other work on this machine)"
        )
        missing = len(wanted) - len(latencies) - len(direct)
        if missing:
            print(f"NOT RECEIVED within 60 s: {missing}")
    finally:
        stop_sink.set()
        for proc in reversed(procs):
            if proc.is_alive():
                proc.terminate()
            proc.join(10)
        if args.database_url and data_dir:
            drop(Workspace(Settings(data_dir=Path(data_dir), database_url=url)), Path(data_dir))
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
