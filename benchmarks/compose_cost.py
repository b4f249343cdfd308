"""Main-thread cost of one campaign message: `compose()` (render, tokens, MIME, DKIM
preparation) and, separately, `finish()` (the RSA signature and the hash, which the worker
runs on a helper thread because they release the GIL).

The kit is the one the worker builds (`build_kit`) from the send benchmark's template
(~26 KB message, 10 merge fields, 20 tracked links) and a DKIM RSA-2048 key; no database,
no network. Each figure is the median of several timed rounds, in µs of the timing
thread's CPU time per message: what a worker's main thread spends, and steadier than wall
time on a shared machine.

    python compose_cost.py [--messages 3000] [--rounds 7] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import machine
from send_throughput import FIELDS, SENDER, template_html

from carepost.campaigns.models import Campaign, SenderProfile
from carepost.content.models import Template
from carepost.content.tokens import TokenSigner
from carepost.crypto.keyring import KeyRing
from carepost.delivery import dkim
from carepost.delivery.compose import CampaignKit, compose, finish
from carepost.delivery.worker import WorkerConfig, build_kit

CONTACT_ID = "c" * 32
BATCH = 500  # the send benchmark's worker batch


def make_kit(folder: Path) -> CampaignKit:
    """The worker's kit from unsaved rows: `build_kit` reads only their attributes."""
    key_file = folder / "dkim.pem"
    key_file.write_bytes(dkim.private_pem(dkim.generate_key("rsa-sha256")))
    template = Template(
        id="t" * 32,
        name="bench",
        message_class="marketing",
        subject="Clinic news",
        html=template_html(),
        text=None,
        phi_fields=" ".join(FIELDS),
        secure_delivery=False,
    )
    sender = SenderProfile(
        id=SENDER,
        from_name="Bench Clinic",
        from_address="news@clinic.example",
        reply_to=None,
        return_path="bounces@clinic.example",
        postal_address="1 Bench Way, Springfield MA",
        organization_name="Bench Clinic",
        dkim_domain="clinic.example",
        dkim_selector="bench",
        dkim_key_file=str(key_file),
    )
    campaign = Campaign(
        id="a" * 32,
        name="bench",
        template_id=template.id,
        message_class="marketing",
        channel="email",
        topic="news",
        sender_id=SENDER,
    )
    return build_kit(campaign, template, sender, WorkerConfig(public_url="https://m.example"))


def record(i: int) -> dict[str, Any]:
    """The same shape as the send benchmark's contacts (synthetic, no PHI)."""
    return {
        "v": 1,
        "name": {"given": [f"Given{i}"], "family": f"Family{i % 977}"},
        "emails": [f"patient{i}@sink.example"],
        "birth_date": f"19{40 + i % 60}-0{1 + i % 9}-1{i % 10}",
        "address": {"city": "Springfield", "state": "MA", "postal_code": f"0{1000 + i % 900}"},
        "language": "en",
        "insurance_type": "commercial",
        "mrn": f"MRN{i:08d}",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile one more round")
    parser.add_argument("--sort", default="tottime", help="pstats sort key for --profile")
    parser.add_argument("--top", type=int, default=25, help="rows --profile prints")
    args = parser.parse_args()
    n = args.messages
    with tempfile.TemporaryDirectory(prefix="carepost-compose-") as folder:
        kit = make_kit(Path(folder))
    ring = KeyRing.generate()
    tokens = TokenSigner(ring)
    at = datetime.now(UTC)
    records = [record(i) for i in range(n)]
    ids = [f"{i:032x}" for i in range(n)]
    batches = [
        list(zip(ids[i : i + BATCH], records[i : i + BATCH], strict=True))
        for i in range(0, n, BATCH)
    ]

    def timed_round() -> tuple[float, float]:
        """Like a worker: a batch of drafts composed, then finished, then dropped."""
        compose_s = finish_s = 0.0
        for batch in batches:
            started = time.thread_time()
            drafts = [
                compose(kit, ring, tokens, oid, CONTACT_ID, rec, [], at) for oid, rec in batch
            ]
            compose_s += time.thread_time() - started
            started = time.thread_time()
            for draft in drafts:
                assert draft is not None
                finish(draft, kit.signer)
            finish_s += time.thread_time() - started
        return compose_s / n * 1e6, finish_s / n * 1e6

    timed_round()  # warm caches (key pads, Jinja, regexes, the kit's encodings)
    rounds = [timed_round() for _ in range(args.rounds)]
    compose_runs = [c for c, _ in rounds]
    finish_runs = [f for _, f in rounds]
    compose_us, finish_us = statistics.median(compose_runs), statistics.median(finish_runs)
    sample = compose(kit, ring, tokens, ids[0], CONTACT_ID, records[0], [], at)
    assert sample is not None
    size = len(finish(sample, kit.signer).data)
    print(f"machine: {machine()}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d}")
    print(f"message: {size} bytes, {len(kit.template.links)} tracked links, DKIM RSA-2048")
    how = f"median of {args.rounds} rounds of {n} in batches of {BATCH}"
    for name, median, runs in (
        ("compose()", compose_us, compose_runs),
        ("finish() ", finish_us, finish_runs),
    ):
        print(f"{name}: {median:.1f} µs/message ({how}; min {min(runs):.1f}, max {max(runs):.1f})")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(timed_round)
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
