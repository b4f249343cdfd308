"""`carepost journey validate FILE` checks a journey definition (each problem with its
step and field) and `carepost journey simulate FILE` dry-runs it over a generated
population on a simulated clock. Neither needs a workspace; neither stores or sends."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from carepost.cli_support import JsonFlag, emit_json, err, fail, out
from carepost.journeys import definition as D
from carepost.journeys.document import load
from carepost.journeys.simulate import Model, simulate

journey_app = typer.Typer(no_args_is_help=True, help="Journeys: automated workflows.")


@journey_app.command("validate")
def validate_cmd(
    file: Annotated[Path, typer.Argument(help="A journey definition (YAML or JSON).")],
    json_out: JsonFlag = False,
) -> None:
    """Check a journey definition: every problem is named by its step and field."""
    data = _read(file)
    try:
        journey = load(data)
    except D.DefinitionError as exc:
        if json_out:
            emit_json(
                {"valid": False, "problems": [{"at": w, "problem": p} for w, p in exc.problems]}
            )
        else:
            err.print(f"[bold red]{file}: {len(exc.problems)} problem(s)[/]")
            for where, problem in exc.problems:
                err.print(f"  {where}: {problem}" if where else f"  {problem}")
        raise typer.Exit(1) from None
    if json_out:
        emit_json({"valid": True, "name": journey.name, "steps": [s.id for s in journey.steps]})
        return
    out.print(f"{file}: journey {journey.name!r} is valid ({len(journey.steps)} steps)")


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        fail(f"{file}: cannot read: {exc.strerror or type(exc).__name__}")


Rate = Annotated[float, typer.Option(min=0.0, max=1.0)]


@journey_app.command("simulate")
def simulate_cmd(
    file: Annotated[Path, typer.Argument(help="A journey definition (YAML or JSON).")],
    population: Annotated[int, typer.Option(min=1, max=1_000_000)] = 10_000,
    days: Annotated[int, typer.Option(min=1, max=3650)] = 30,
    seed: Annotated[int, typer.Option(help="Same seed, same result.")] = 1,
    start: Annotated[
        str | None, typer.Option(help="Simulated start, ISO 8601 with offset [now]")
    ] = None,
    open_rate: Rate = 0.25,
    click_rate: Rate = 0.2,
    event_rate: Rate = 0.1,
    attribute_rate: Rate = 0.5,
    marketing_per_week: Annotated[int, typer.Option(min=0)] = 3,
    json_out: JsonFlag = False,
) -> None:
    """Dry-run a journey over a generated population: contacts per step and messages per
    class, without sending or writing anything (the model is in journeys/simulate.py)."""
    try:
        journey = load(_read(file))
    except D.DefinitionError as exc:
        fail(f"{file} is not a valid journey:\n{exc}")
    try:
        begin = datetime.fromisoformat(start) if start else datetime.now(UTC)
    except ValueError:
        fail("--start: an ISO 8601 instant with its offset, e.g. 2027-01-04T00:00Z", 2)
    if begin.tzinfo is None:
        fail("--start needs its UTC offset (e.g. Z)", 2)
    model = Model(
        open_rate=open_rate,
        click_rate=click_rate,
        event_rate=event_rate,
        attribute_rate=attribute_rate,
        marketing_per_week=marketing_per_week,
    )
    report = simulate(
        journey, population=population, days=days, start=begin, seed=seed, model=model
    )
    if json_out:
        emit_json(report.as_dict())
        return
    out.print(
        f"journey {journey.name!r}: {report.enrolled} of {population} enrolled over {days} days; "
        f"{report.completed} completed, {report.goal_reached} reached the goal, "
        f"{report.still_active} still in the journey"
    )
    for step_id, counts in report.steps.items():
        exits = ", ".join(f"{k} {v}" for k, v in sorted(counts.exited.items()))
        out.print(
            f"  {step_id:<24} reached {counts.entered:>8}  waiting {counts.waiting:>7}"
            + (f"  exited: {exits}" if exits else "")
        )
    sent = ", ".join(f"{cls} {n}" for cls, n in sorted(report.messages.items())) or "none"
    out.print(f"messages: {sent}; frequency-capped sends skipped: {report.capped}")
