"""`carepost journey validate` as a user runs it (no workspace needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "journeys"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carepost.cli", "journey", "validate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_valid_journey_is_confirmed() -> None:
    done = run(str(EXAMPLES / "refill-reminder.yaml"), "--json")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == {
        "valid": True,
        "name": "refill-reminder",
        "steps": ["remind", "wait-click", "fallback", "done"],
    }


def test_problems_are_listed_by_place_and_exit_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: j\ntrigger: {event: {name: purchase}}\nsteps:\n"
        "  - {id: a, send: {template: t, class: promo}}\n"
        "  - {id: b, goto: {step: c}}\n"
    )
    done = run(str(bad), "--json")
    assert done.returncode == 1
    assert orjson.loads(done.stdout)["problems"] == [
        {
            "at": "steps[0] (a).send.class",
            "problem": "one of treatment, operations, transactional, marketing, marketing_paid",
        }
    ]
    human = run(str(bad))
    assert human.returncode == 1
    assert "steps[0] (a).send.class" in human.stderr
    missing = run(str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr
