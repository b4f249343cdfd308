"""What every `carepost` command shares: the consoles, the workspace it opens, the actor it
acts as, JSON output, progress bars and failures. Capability packages keep their commands
in their own `commands.py` (a Typer app that `cli.py` registers) and import these."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from carepost.audit.actor import Actor
from carepost.crypto.keyring import KeyFileError
from carepost.workspace import Workspace, WorkspaceError, open_workspace

# No emoji codes: ":date:" inside a DKIM h= list must print as written.
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, emoji=False)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Workspace folder [env CAREPOST_DATA_DIR; ./carepost-data]"),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]

# The root callback's --data-dir (`carepost --data-dir D cmd`); a command's own wins.
_state: dict[str, Path | None] = {"data_dir": None}


def set_root_data_dir(data_dir: Path | None) -> None:
    _state["data_dir"] = data_dir


def chosen_data_dir(data_dir: Path | None) -> Path | None:
    return data_dir or _state["data_dir"]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def emit_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


@contextmanager
def workspace(data_dir: Path | None) -> Iterator[Workspace]:
    """The chosen workspace, its schema checked and its key file loaded before any work."""
    ws = open_workspace(chosen_data_dir(data_dir))
    try:
        ws.check_schema()
        ws.keyring  # noqa: B018 (load early so a bad key file fails before any work)
        yield ws
    except (WorkspaceError, KeyFileError) as exc:
        fail(str(exc))
    finally:
        ws.close()


def actor_of(ws: Workspace) -> Actor:
    return Actor.cli(ws.settings.actor)


def progress_bar(total: int, label: str) -> tuple[Progress, Callable[[int], None]]:
    """A transient bar on stderr (hidden when stderr is not a terminal)."""
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = bar.add_task(label, total=total)
    return bar, lambda n: bar.advance(task, n)


def progress_counter(label: str) -> tuple[Progress, Callable[[int], None]]:
    """A transient line on stderr for work whose size is not known up front: the label and
    a running count, redrawn at each advance (hidden when stderr is not a terminal). It
    has no refresh thread, so it can stay up while the code under it forks (the segment
    snapshot's decrypt workers): a thread writing to stderr at fork time could leave a
    lock held in the child."""
    bar = Progress(
        TextColumn(label),
        TextColumn("{task.completed:,.0f}"),
        console=err,
        transient=True,
        auto_refresh=False,
        disable=not err.is_terminal,
    )
    task = bar.add_task(label, total=None)

    def advance(n: int) -> None:
        bar.advance(task, n)
        bar.refresh()

    return bar, advance
