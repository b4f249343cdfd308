"""The labelled replay set (tests/data/tracking_replay.jsonl, written by
tests/data/make_tracking_replay.py) against the issue's goals for `machine`: precision
>= 0.95, recall >= 0.90."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from carepost.tracking.classifier import MACHINE_REASONS, Knowledge
from carepost.tracking.replay import Recorded, classify_all, read_lines

REPLAY = Path(__file__).parents[2] / "data" / "tracking_replay.jsonl"


def _records() -> list[Recorded]:
    parsed = [item for _, item in read_lines(REPLAY.read_bytes().splitlines())]
    records = [item for item in parsed if isinstance(item, Recorded)]
    assert len(records) == len(parsed), "every line of the replay set parses"
    return records


def test_replay_set_meets_the_goals() -> None:
    records = _records()
    assert len(records) >= 300
    verdicts = classify_all(records, Knowledge.default())
    pairs = [(r.extra["label"], v.verdict) for r, v in zip(records, verdicts, strict=True)]
    tp = pairs.count(("machine", "machine"))
    fp = pairs.count(("human", "machine"))
    fn = pairs.count(("machine", "human"))
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert precision >= 0.95, precision
    assert recall >= 0.90, recall
    # Every scenario of the set is present, and every machine reason fires somewhere.
    scenarios = Counter(r.extra["scenario"] for r in records)
    assert len(scenarios) >= 12
    fired = {reason for v in verdicts for reason in v.reasons}
    assert set(MACHINE_REASONS) <= fired
    assert {"google_proxy", "no_machine_signal"} <= fired


def test_replay_is_deterministic() -> None:
    records = _records()
    assert classify_all(records, Knowledge.default()) == classify_all(
        list(records), Knowledge.default()
    )
