"""`carepost journey validate FILE`: check a journey definition without a workspace. Each
problem prints with its place (step and field); nothing is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from carepost.cli_support import JsonFlag, emit_json, err, fail, out
from carepost.journeys import definition as D
from carepost.journeys.document import load

journey_app = typer.Typer(no_args_is_help=True, help="Journeys: automated workflows.")


@journey_app.command("validate")
def validate_cmd(
    file: Annotated[Path, typer.Argument(help="A journey definition (YAML or JSON).")],
    json_out: JsonFlag = False,
) -> None:
    """Check a journey definition: every problem is named by its step and field."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        fail(f"{file}: cannot read: {exc.strerror or type(exc).__name__}")
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
