"""`carepost tracking classify` as a user runs it: offline, one line per event, bad lines
named by number and field without their value, exit 1 when any line was bad."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cli_runner import Run

REPLAY = Path(__file__).parents[2] / "data" / "tracking_replay.jsonl"


def test_classify_replay_lines(carepost: Callable[..., Run], tmp_path: Path) -> None:
    good = REPLAY.read_text(encoding="utf-8").splitlines()[:3]
    bad = json.loads(good[0]) | {"delivered_at": "secret-birthday-1961"}
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([good[0], "{not json", json.dumps(bad), *good[1:]]) + "\n")
    text = carepost("tracking", "classify", str(path), check=False)
    assert text.returncode == 1
    assert [line.split("\t")[:3] for line in text.stdout.splitlines()] == [
        ["1", "machine", "apple_mpp"],
        ["4", "machine", "apple_mpp"],
        ["5", "machine", "apple_mpp"],
    ]
    assert "line 2: not a JSON object" in text.stderr
    assert "line 3: field 'delivered_at' is not an ISO 8601 time" in text.stderr
    assert "secret-birthday" not in text.stderr + text.stdout
    as_json = carepost("tracking", "classify", str(path), "--json", check=False)
    docs = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [d["line"] for d in docs] == [1, 2, 3, 4, 5]
    assert docs[0]["verdict"] == "machine"
    assert docs[0]["reasons"] == ["apple_mpp"]
    assert docs[2] == {"line": 3, "error": "field 'delivered_at' is not an ISO 8601 time"}
    ok = tmp_path / "ok.jsonl"
    ok.write_text("\n".join(good) + "\n")
    assert carepost("tracking", "classify", str(ok)).returncode == 0
