"""Tracking classifier (issue 7): precision and recall for `machine` on the labelled replay
set, per-scenario accuracy and every miss, the false-positive rate on the shared lists'
real browser user agents, and the pure classifier's speed.

    python benchmarks/tracking_accuracy.py   (shared lists from $CAREPOST_SHARED_DATA or
                                             ../shared/data; skipped when absent)
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import machine

from carepost.tracking.classifier import Event, Knowledge, classify
from carepost.tracking.replay import Recorded, classify_all, read_lines

ROOT = Path(__file__).resolve().parents[1]
REPLAY = ROOT / "tests" / "data" / "tracking_replay.jsonl"


def shared_folder() -> Path:
    shared = os.environ.get("CAREPOST_SHARED_DATA")
    return (Path(shared) if shared else ROOT.parent / "shared" / "data") / "user-agents"


def replay_figures(knowledge: Knowledge) -> list[Recorded]:
    lines = REPLAY.read_bytes().splitlines()
    records = [r for _, r in read_lines(lines) if isinstance(r, Recorded)]
    verdicts = classify_all(records, knowledge)
    pairs = [(r.extra["label"], v.verdict) for r, v in zip(records, verdicts, strict=True)]
    tp = pairs.count(("machine", "machine"))
    fp = pairs.count(("human", "machine"))
    fn = pairs.count(("machine", "human"))
    labels = Counter(label for label, _ in pairs)
    print(
        f"replay set: {len(records)} events ({labels['machine']} machine, {labels['human']} human)"
    )
    print(f"machine precision: {tp}/{tp + fp} = {tp / (tp + fp):.3f}  (goal >= 0.95)")
    print(f"machine recall:    {tp}/{tp + fn} = {tp / (tp + fn):.3f}  (goal >= 0.90)")
    by_scenario: dict[str, list[bool]] = {}
    for r, (label, got) in zip(records, pairs, strict=True):
        by_scenario.setdefault(r.extra["scenario"], []).append(label == got)
    for name, oks in sorted(by_scenario.items()):
        print(f"  {name:32} {sum(oks):3}/{len(oks):3}")
    misses = [
        (r, v) for r, v in zip(records, verdicts, strict=True) if r.extra["label"] != v.verdict
    ]
    print(f"misses ({len(misses)}):")
    for r, v in misses:
        print(
            f"  line {r.line}: {r.extra['scenario']}, labelled {r.extra['label']}, "
            f"got {v.verdict} ({', '.join(v.reasons)})"
        )
    return records


def browser_false_positives(knowledge: Knowledge) -> None:
    folder = shared_folder()
    if not folder.is_dir():
        print(f"shared user-agent lists not found at {folder}: false-positive figure skipped")
        return
    sys.path.insert(0, str(ROOT / "tests" / "unit" / "tracking"))
    import ua_samples  # the tests' reader of the third-party lists

    delivered = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    at = delivered + timedelta(hours=2)
    for label, agents, bad in (
        ("real browsers called machine", ua_samples.browsers(folder), "machine"),
        ("listed bots called human", ua_samples.bots(folder), "human"),
    ):
        wrong = 0
        for ua in agents:
            event = Event("open", None, "GET", ua, "198.51.100.7", {}, delivered, at, 3, False)
            wrong += classify(event, [event], knowledge).verdict == bad
        print(f"{label}: {wrong}/{len(agents)} = {wrong / len(agents):.2%}")


def speed(records: list[Recorded], knowledge: Knowledge) -> None:
    rounds = 50
    started = time.perf_counter()
    for _ in range(rounds):
        classify_all(records, knowledge)
    elapsed = time.perf_counter() - started
    n = rounds * len(records)
    print(f"speed: {n / elapsed:,.0f} events/s, {elapsed / n * 1e6:.1f} µs an event (one core)")


def main() -> None:
    print(f"machine: {machine()}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d}")
    knowledge = Knowledge.default()
    records = replay_figures(knowledge)
    browser_false_positives(knowledge)
    speed(records, knowledge)


if __name__ == "__main__":
    main()
