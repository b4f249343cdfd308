"""Segments on N generated contacts (default 1,000,000): cold snapshot build from the
encrypted store, warm count of a 6-clause rule, resident memory, and how fast one change
shows in a count.

Anchors: Mautic's published figure (about 40 minutes to rebuild one filtered segment of
260,000 contacts, mautic/mautic#8113), and in the same run a plain Python loop that
evaluates the same rule contact by contact over the same snapshot (what an ORM-free
"for each contact" evaluator costs), with the ratio.

    python benchmarks/segment_count.py [--contacts 1000000] [--data-dir DIR] [--runs 20]

With --data-dir, a workspace that already holds the population is reused (generate it
once with `carepost --data-dir DIR demo-data --contacts N --seed 42`); without it, one
is generated into a temporary workspace first (timed and reported).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
from _common import drop, fresh_workspace, machine

from carepost.audit.actor import Actor
from carepost.config import Settings
from carepost.contacts.population import people, write_population
from carepost.contacts.store import ContactInput, ContactWriter
from carepost.db import transaction
from carepost.segments import evaluator
from carepost.segments.groups import CONDITION_GROUPS, VACCINE_GROUPS, code_matcher
from carepost.segments.parser import parse
from carepost.segments.service import SegmentEngine
from carepost.segments.snapshot import BOOKED_BIT, MISSING, NO_SHOW_BIT, Snapshot, build_snapshot
from carepost.segments.stage import DAY, DEFAULT_RULES, classify
from carepost.tracking.service import record_event
from carepost.workspace import open_workspace

RULE = (
    'age >= 50 and has_condition("diabetes") and lab("4548-4") > 7.0 within 180d '
    'and not vaccinated("influenza", within=365d) and opened(within=90d) '
    'and stage in ["active", "overdue", "at_risk"]'
)
MAUTIC = "Mautic: about 40 min to rebuild one filtered segment of 260,000 contacts (mautic#8113)"
ACTOR = Actor("bench", "cli", "bench")


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set of this process in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def plain_loop(snap: Snapshot, at: datetime) -> tuple[int, float]:
    """The anchor: the same rule, contact by contact, in plain Python over the snapshot's
    data (facts grouped per contact beforehand, not timed)."""
    t = int(at.timestamp())
    n = snap.n

    def grouped(rows: np.ndarray, *cols: np.ndarray) -> list[list[tuple[object, ...]]]:
        out: list[list[tuple[object, ...]]] = [[] for _ in range(n)]
        for item in zip(rows.tolist(), *(c.tolist() for c in cols), strict=True):
            out[item[0]].append(item[1:])
        return out

    f = snap.facts
    diabetes = code_matcher("diabetes", CONDITION_GROUPS, icd10_prefix=True)
    flu = code_matcher("influenza", VACCINE_GROUPS, icd10_prefix=False)
    codes = snap.codes.values
    cond = grouped(
        f["condition"].row,
        f["condition"].code,
        f["condition"].flag,
        f["condition"].t,
        f["condition"].end,
    )
    labs = grouped(
        f["observation"].row, f["observation"].code, f["observation"].t, f["observation"].value
    )
    imms = grouped(f["immunization"].row, f["immunization"].code, f["immunization"].t)
    encs = grouped(f["encounter"].row, f["encounter"].t)
    appts = grouped(f["appointment"].row, f["appointment"].t, f["appointment"].flag)
    ev = snap.events
    events = grouped(ev.row, ev.kind, ev.verdict, ev.t)
    birth_y, birth_md = snap.birth_y.tolist(), snap.birth_md.tolist()
    eligible = (snap.present & ~snap.deceased).tolist()
    md_at = at.month * 100 + at.day
    wanted = {"active", "overdue", "at_risk"}
    started = time.perf_counter()
    hits = 0
    for i in range(n):
        if not eligible[i] or birth_y[i] == 0:
            continue
        if at.year - birth_y[i] - (1 if birth_md[i] > md_at else 0) < 50:
            continue
        if not any(
            flag == 1 and start <= t and (end == MISSING or end > t) and diabetes(*codes[code])
            for code, flag, start, end in cond[i]
        ):
            continue
        latest = None
        for code, when, value in labs[i]:
            recent = codes[code][1] == "4548-4" and t - 180 * DAY <= when <= t
            if recent and value == value and (latest is None or (when, value) > latest):
                latest = (when, value)
        if latest is None or not latest[1] > 7.0:
            continue
        if any(flu(*codes[code]) and t - 365 * DAY <= when <= t for code, when in imms[i]):
            continue
        if not any(k == 0 and v == 0 and t - 90 * DAY <= when <= t for k, v, when in events[i]):
            continue
        stage = classify(
            [w for (w,) in encs[i]],
            [
                (w, "booked" if fl & BOOKED_BIT else "x", bool(fl & NO_SHOW_BIT))
                for w, fl in appts[i]
            ],
            t,
            DEFAULT_RULES,
        )
        if stage in wanted:
            hits += 1
    return hits, time.perf_counter() - started


def change_one(ws_engine: object, ring: object, seed: int, as_of: date) -> None:
    with transaction(ws_engine) as session:  # type: ignore[arg-type]
        writer = ContactWriter(session, ring, now=datetime.now(UTC), source="demo")  # type: ignore[arg-type]
        gen = next(people(1, seed, as_of))
        record = dict(gen.record)
        record["address"] = {**record["address"], "state": "ZZ"}
        outcome = writer.upsert_contacts([ContactInput(gen.source_key, record, gen.lookups)])[0]
        assert outcome.status == "updated", outcome
        record_event(
            session,
            contact_id=outcome.contact_id or "",
            kind="api_event",
            name="bench_change",
            at=datetime.now(UTC) - timedelta(seconds=1),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--as-of", default="2026-11-24")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    as_of = date.fromisoformat(args.as_of)
    folder = None
    if args.data_dir is not None:
        settings = Settings(
            data_dir=args.data_dir,
            **({"database_url": args.database_url} if args.database_url else {}),
        )
        ws = open_workspace(settings=settings)
        print(f"reusing workspace {args.data_dir}")
    else:
        ws, folder = fresh_workspace(args.database_url)
        started = time.perf_counter()
        with transaction(ws.engine) as session:
            write_population(
                session,
                ws.keyring,
                contacts=args.contacts,
                seed=args.seed,
                as_of=as_of,
                actor=ACTOR,
                now=datetime.now(UTC),
            )
        print(
            f"generated {args.contacts:,} contacts with facts and events in "
            f"{time.perf_counter() - started:.1f} s"
        )
    try:
        gc.collect()
        rss_before, _ = rss_mib()
        started = time.perf_counter()
        snap = build_snapshot(ws.engine, ws.keyring, actor=ACTOR, workers=args.workers)
        cold = time.perf_counter() - started
        gc.collect()
        rss_after, peak = rss_mib()
        stats = snap.stats()
        assert stats["contacts"] >= args.contacts, stats
        node = parse(RULE)
        at = datetime(as_of.year, as_of.month, as_of.day, 12, tzinfo=UTC)
        started = time.perf_counter()
        first = evaluator.count(node, snap, at)
        first_ms = (time.perf_counter() - started) * 1000
        warm = []
        for _ in range(args.runs):
            started = time.perf_counter()
            n = evaluator.count(node, snap, at)
            warm.append((time.perf_counter() - started) * 1000)
            assert n == first
        moving = []
        for k in range(max(args.runs // 4, 3)):
            started = time.perf_counter()
            evaluator.count(node, snap, at + timedelta(seconds=k + 1))
            moving.append((time.perf_counter() - started) * 1000)
        # One change, in a long-lived process: the engine refreshes before it counts.
        engine = SegmentEngine(ws.engine, ws.keyring, actor=ACTOR)
        engine._snapshot = snap
        engine.refresh()
        assert engine.count('state == "ZZ"') == 0
        change_one(ws.engine, ws.keyring, args.seed, as_of)
        started = time.perf_counter()
        changed = engine.count('state == "ZZ" and event_received("bench_change", within=1d)')
        change_ms = (time.perf_counter() - started) * 1000
        assert changed == 1, changed
        anchor_hits, anchor_s = plain_loop(snap, at)
        assert anchor_hits == first, (anchor_hits, first)
        warm_ms = statistics.median(warm)
        engine_name = "PostgreSQL" if ws.engine.dialect.name == "postgresql" else "SQLite"
        print(f"machine: {machine()}")
        print(f"date: {datetime.now(UTC):%Y-%m-%d}")
        print(
            f"population: {stats['contacts']:,} contacts, {stats['facts']:,} fact rows, "
            f"{stats['events']:,} events ({engine_name})"
        )
        print(f"rule ({evaluator.A.clause_count(node)} clauses): {RULE}")
        print(f"members: {first:,}")
        print(f"cold snapshot build ({args.workers} processes): {cold:.1f} s")
        print(
            f"resident memory: {rss_after:,.0f} MiB after build (was {rss_before:,.0f}; "
            f"peak {peak:,.0f}); snapshot arrays {snap.nbytes() / 2**20:,.0f} MiB"
        )
        print(
            f"warm count: median {warm_ms:.1f} ms of {args.runs} "
            f"(min {min(warm):.1f}, max {max(warm):.1f})"
        )
        print(
            f"first count at a new time (stage recomputed): {first_ms:.1f} ms; "
            f"at moving times median {statistics.median(moving):.1f} ms"
        )
        print(f"one contact change + one event reflected in the next count: {change_ms:.0f} ms")
        print(
            "anchor (plain Python per-contact loop, same snapshot, same rule): "
            f"{anchor_s:.2f} s -> ratio {anchor_s * 1000 / warm_ms:,.0f}x the warm count's time"
        )
        print(
            f"anchor (published): {MAUTIC} -> ratio {40 * 60 * 1000 / warm_ms:,.0f}x "
            "(different machine, 3.8x fewer contacts)"
        )
    finally:
        if folder is not None:
            drop(ws, folder)
        else:
            ws.close()


if __name__ == "__main__":
    main()
