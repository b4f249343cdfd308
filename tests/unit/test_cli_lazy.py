"""The command groups of the other packages load when used (carepost.cli_lazy): starting
`carepost` imports none of them, and each loads as the command it was when registered
eagerly (a group stays a group, a command keeps its name)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer.core

from carepost.cli_lazy import LAZY, load

HEAVY = [
    "carepost.journeys.commands",
    "carepost.segments.commands",
    "carepost.doctor.commands",
    "carepost.web.commands",
    "numpy",
    "httpx",
    "yaml",
]


def imported_after(argv: list[str]) -> list[str]:
    """Which HEAVY modules are loaded once `carepost argv` has parsed its arguments."""
    code = (
        "import sys, carepost.cli as cli\n"
        f"sys.argv = ['carepost', *{argv!r}]\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(set({HEAVY!r}) & set(sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return sorted(eval(result.stderr.strip().splitlines()[-1]))  # noqa: S307 - our own output


def test_starting_imports_no_command_group() -> None:
    assert imported_after(["template", "--help"]) == []


def test_a_command_imports_its_own_group_only() -> None:
    loaded = imported_after(["journey", "--help"])
    assert "carepost.journeys.commands" in loaded
    others = {m for m in HEAVY if m.endswith(".commands")} - {"carepost.journeys.commands"}
    assert others.isdisjoint(loaded)


@pytest.mark.parametrize("name", sorted(LAZY))
def test_every_lazy_entry_loads_under_its_name(name: str) -> None:
    command = load(name)
    assert command.name == name
    is_group = isinstance(command, typer.core.TyperGroup)
    assert is_group == (name not in {"worker", "serve", "demo-data"})
    if is_group:
        assert command.list_commands(None)  # type: ignore[arg-type]
