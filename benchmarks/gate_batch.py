"""The consent gate's batch form over a preloaded state: decisions per second.

N synthetic contacts (default 200,000) with a realistic mix: most authorized and opted in,
some revoked, expired, opted out, suppressed, without authorization or opt-in. The gate
decides one `marketing` message (the class with the most checks) for all of them with
`gate.decide_batch`, the form the send path uses after loading a batch's state.

Anchor, measured in the same run over the same data: a bare Python loop doing one dict
lookup per recipient (`[states[c] for c in ids]`), the least any per-recipient decision
over a preloaded state can cost. The ratio says what the rules cost on top of that.

With --db, also the whole claim-time entry point (`service.gate_batch`: lock and load the
state of a batch of 2,000 contacts in a few queries, decide, store every decision, audit)
on a fresh SQLite workspace.

    python benchmarks/gate_batch.py [--contacts 200000] [--runs 5] [--db]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from _common import drop, fresh_workspace, machine, median_of

from carepost.consent import gate
from carepost.consent.records import (
    AuthorizationState,
    ConsentEvent,
    ContactState,
    SuppressionState,
)

AT = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def make_states(n: int, seed: int = 3) -> tuple[dict[str, ContactState], list[str]]:
    rnd = random.Random(seed)
    states: dict[str, ContactState] = {}
    ids: list[str] = []
    opted_in = {("email", "newsletter"): (ConsentEvent("opted_in", AT - 40 * DAY),)}
    opted_out = {
        ("email", "newsletter"): (
            ConsentEvent("opted_in", AT - 40 * DAY),
            ConsentEvent("opted_out", AT - 3 * DAY),
        )
    }
    for i in range(n):
        cid = f"{i:032x}"
        roll = rnd.random()
        auth = AuthorizationState(
            id=f"a{i:031x}",
            purposes=frozenset({"marketing"}),
            recipients=frozenset({"self", "acme-pharmacy"}),
            signed_at=AT - rnd.randint(10, 300) * DAY,
            expires_at=AT + rnd.randint(-20, 400) * DAY,
            revoked_at=AT - DAY if roll < 0.03 else None,
        )
        consents = opted_out if 0.03 <= roll < 0.06 else opted_in
        auths = () if 0.06 <= roll < 0.09 else (auth,)
        sups = (SuppressionState("email", "hard_bounce", AT - DAY),) if roll > 0.98 else ()
        if 0.09 <= roll < 0.11:
            consents = {}
        states[cid] = ContactState(cid, consents, auths, sups)
        ids.append(cid)
    return states, ids


CPU: list[tuple[str, float]] = []  # (what, process CPU seconds) of every timed run


def gate_once(states: dict[str, ContactState], ids: list[str]) -> float:
    gc.collect()
    cpu = time.process_time()
    started = time.perf_counter()
    decisions = gate.decide_batch(states, ids, "marketing", "email", "newsletter", "self", AT)
    elapsed = time.perf_counter() - started
    CPU.append(("gate", time.process_time() - cpu))
    assert len(decisions) == len(ids)
    return elapsed


def anchor_once(states: dict[str, ContactState], ids: list[str]) -> float:
    gc.collect()
    cpu = time.process_time()
    started = time.perf_counter()
    found = [states[c] for c in ids]
    elapsed = time.perf_counter() - started
    CPU.append(("anchor", time.process_time() - cpu))
    assert len(found) == len(ids)
    return elapsed


def db_once(batch: int) -> float:
    from carepost.audit.actor import Actor
    from carepost.consent import service
    from carepost.contacts.store import ContactInput, ContactWriter
    from carepost.db import transaction

    ws, folder = fresh_workspace()
    actor = Actor("bench", "cli", "bench")
    try:
        with transaction(ws.engine) as s:
            writer = ContactWriter(s, ws.keyring, now=datetime.now(UTC), source="bench")
            outcomes = writer.upsert_contacts(
                [
                    ContactInput(f"b:{i}", {"v": 1}, [("email", f"b{i}@example.org")])
                    for i in range(batch)
                ]
            )
            ids = [o.contact_id for o in outcomes if o.contact_id]
            for cid in ids:
                service.set_consent(
                    s,
                    contact_id=cid,
                    channel="email",
                    topic="newsletter",
                    status="opted_in",
                    source="import",
                    actor=actor,
                )
        started = time.perf_counter()
        with transaction(ws.engine) as s:
            result = service.gate_batch(
                s,
                campaign_id="bench",
                contact_ids=ids,
                message_class="treatment",
                channel="email",
                topic="newsletter",
                sender="self",
                actor=actor,
            )
        elapsed = time.perf_counter() - started
        assert len(result.decisions) == batch
        return elapsed
    finally:
        drop(ws, folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--db", action="store_true")
    parser.add_argument("--db-batch", type=int, default=2000)
    args = parser.parse_args()
    states, ids = make_states(args.contacts)
    n = len(ids)
    ours, our_runs = median_of(args.runs, lambda: gate_once(states, ids))
    anchor, anchor_runs = median_of(args.runs, lambda: anchor_once(states, ids))
    mix = gate.decide_batch(states, ids, "marketing", "email", "newsletter", "self", AT)
    allowed = sum(d.allowed for d in mix)
    print(f"machine: {machine()}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d}")
    print(
        f"gate.decide_batch, marketing, {n:,} contacts ({allowed / n:.0%} allowed): median "
        f"{ours * 1000:.1f} ms of {[round(t * 1000, 1) for t in our_runs]} -> "
        f"{n / ours:,.0f} decisions/s"
    )
    print(
        f"anchor (one dict lookup per recipient): median {anchor * 1000:.1f} ms of "
        f"{[round(t * 1000, 1) for t in anchor_runs]} -> {n / anchor:,.0f} lookups/s"
    )
    print(f"ratio gate/anchor: {ours / anchor:.1f}x the time")
    # Process CPU time of the same runs: on a machine shared with other work, wall time
    # also counts the time the scheduler gave to others; CPU time does not.
    gate_cpu = statistics.median(t for what, t in CPU if what == "gate")
    anchor_cpu = statistics.median(t for what, t in CPU if what == "anchor")
    print(
        f"CPU time (same runs): gate median {gate_cpu * 1000:.1f} ms -> {n / gate_cpu:,.0f} "
        f"decisions per CPU-second; anchor {anchor_cpu * 1000:.1f} ms -> "
        f"{n / anchor_cpu:,.0f}; ratio {gate_cpu / anchor_cpu:.1f}x"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    if args.db:
        db, db_runs = median_of(3, lambda: db_once(args.db_batch))
        print(
            f"service.gate_batch on SQLite, batch of {args.db_batch:,} (lock, load, decide, "
            f"store, audit): median {db * 1000:.0f} ms of {[round(t * 1000) for t in db_runs]} "
            f"-> {args.db_batch / db:,.0f} decisions/s"
        )


if __name__ == "__main__":
    main()
