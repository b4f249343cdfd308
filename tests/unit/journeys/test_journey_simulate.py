"""Dry runs: exact counts where the model leaves no chance, repeatable where it does."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from carepost.journeys.document import load
from carepost.journeys.simulate import Model, simulate

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "journeys"
START = datetime(2027, 1, 1, tzinfo=UTC)


def example(name: str):  # type: ignore[no-untyped-def]
    return load((EXAMPLES / f"{name}.yaml").read_text())


def steps(report_dict: dict) -> dict[str, int]:  # type: ignore[type-arg]
    return {s["step"]: s["entered"] for s in report_dict["steps"]}


def test_everyone_clicks_so_nobody_gets_the_fallback() -> None:
    model = Model(open_rate=1, click_rate=1, first_link_share=1, event_rate=0)
    r = simulate(example("refill-reminder"), population=500, days=10, start=START, model=model)
    assert steps(r.as_dict()) == {"remind": 500, "wait-click": 500, "fallback": 0, "done": 500}
    assert r.messages == {"treatment": 500}
    assert (r.completed, r.still_active, r.goal_reached) == (500, 0, 0)


def test_nobody_opens_so_everyone_gets_the_fallback_after_three_days() -> None:
    model = Model(open_rate=0, event_rate=0)
    r = simulate(example("refill-reminder"), population=500, days=10, start=START, model=model)
    assert steps(r.as_dict())["fallback"] == 500
    assert r.messages == {"treatment": 1000}
    # With only two days simulated the three-day wait has not ended for anyone.
    short = simulate(example("refill-reminder"), population=500, days=2, start=START, model=model)
    assert short.as_dict()["steps"][1]["waiting"] == 500
    assert short.still_active == 500


def test_every_birthday_falls_within_a_year_and_sends_once() -> None:
    r = simulate(example("birthday"), population=1000, days=365, start=START)
    assert (r.enrolled, r.completed) == (1000, 1000)
    assert r.messages == {"marketing": 1000}


def test_the_frequency_cap_skips_marketing_beyond_the_weekly_limit() -> None:
    j = load(
        "name: burst\ntrigger: {manual: {}}\nsteps:\n"
        + "".join(f"  - {{id: s{i}, send: {{template: t, class: marketing}}}}\n" for i in range(5))
        + "  - {id: s5, send: {template: t, class: treatment}}\n"
    )
    r = simulate(j, population=10, days=1, start=START, model=Model(marketing_per_week=2))
    assert r.messages == {"marketing": 20, "treatment": 10}
    assert r.capped == 30


def test_branches_split_by_journey_engagement_exactly() -> None:
    everyone = Model(open_rate=1, open_delay_hours=1, click_rate=0)
    r = simulate(example("welcome-series"), population=200, days=30, start=START, model=everyone)
    assert steps(r.as_dict())["invite"] == 200
    nobody = Model(open_rate=0)
    r = simulate(example("welcome-series"), population=200, days=30, start=START, model=nobody)
    assert steps(r.as_dict())["invite"] == 0


def test_the_same_seed_gives_the_same_report_and_rates_move_counts() -> None:
    a = simulate(example("welcome-series"), population=2000, days=30, start=START, seed=7)
    b = simulate(example("welcome-series"), population=2000, days=30, start=START, seed=7)
    assert a.as_dict() == b.as_dict()
    invited = steps(a.as_dict())["invite"]
    # P(opened welcome or tips) = 1 - 0.75^2 = 0.4375 with the default open rate.
    assert 0.40 * 2000 < invited < 0.48 * 2000


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="population"):
        simulate(example("birthday"), population=0, days=1, start=START)
    with pytest.raises(ValueError, match="open_rate"):
        Model(open_rate=1.5)


def test_the_command_prints_json_and_writes_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "carepost.cli", "journey", "simulate",
            str(EXAMPLES / "lab-result.yaml"), "--population", "300", "--days", "5",
            "--start", "2027-01-01T00:00Z", "--open-rate", "0", "--json",
        ],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["enrolled"] == 300
    assert report["messages"] == {"treatment": 600}  # notice, then the nudge for everyone
    assert list(tmp_path.iterdir()) == []
