"""CPU the sending side spends on SMTP over TLS alone, per message: carepost's SMTP
transport as the worker uses it (`send_batch` on batches of 500: pooled sessions that
stream, each body written with the next message's MAIL/RCPT/DATA; implicit TLS) pushing one fixed
26 KB message to Postfix's `smtp-sink` behind `stunnel4`, as send_throughput.py does,
with no database, no rendering and no signature. It is the share of the worker's CPU
a message that belongs to the wire.

    apt-get install postfix stunnel4
    python smtp_client_cost.py [--messages 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import ssl
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import machine
from send_throughput import BATCH, CONCURRENCY, start_sinks, stop_sinks

from carepost.delivery.smtp import Envelope, RelayConfig, SmtpTransport

MESSAGE = (
    b"From: news@clinic.example\r\nTo: patient@sink.example\r\nSubject: Clinic news\r\n\r\n"
    + (b"y" * 76 + b"\r\n") * 340
)


async def push(tls_port: int, ca: Path, count: int) -> None:
    relay = RelayConfig(
        "127.0.0.1",
        tls_port,
        tls="implicit",
        tls_context=ssl.create_default_context(cafile=str(ca)),
        pool_size=CONCURRENCY,
        max_messages_per_connection=1000,
        timeout=30,
    )
    transport = SmtpTransport(relay)
    envelope = Envelope("bounce@clinic.example", "patient@sink.example", MESSAGE, crlf_clean=True)
    for start in range(0, count, BATCH):
        attempts = await transport.send_batch([envelope] * min(BATCH, count - start))
        for attempt in attempts:
            if attempt.outcome.status != "sent":
                raise SystemExit(f"not sent: {attempt.outcome}")
    await transport.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    for tool in ("smtp-sink", "stunnel4"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install postfix stunnel4")
    folder = Path(tempfile.mkdtemp(prefix="carepost-smtp-"))
    procs, _, tls_port, ca = start_sinks(folder)
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        asyncio.run(push(tls_port, ca, args.messages))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(f"machine: {machine()}")
        print(f"date: {datetime.now(UTC):%Y-%m-%d}")
        print(
            f"{args.messages} messages of {len(MESSAGE)} bytes, {CONCURRENCY} sessions, "
            f"implicit TLS: {args.messages / wall:,.0f} msg/s; "
            f"sender CPU {cpu / args.messages * 1e6:,.0f} µs a message"
        )
    finally:
        stop_sinks(procs, folder)


if __name__ == "__main__":
    main()
