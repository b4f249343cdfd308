"""`carepost settings show|set`: the account-wide settings (account/settings.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from carepost.account import settings as account
from carepost.cli_support import DataDir, JsonFlag, actor_of, emit_json, fail, out, workspace
from carepost.db import transaction

settings_app = typer.Typer(no_args_is_help=True, help="Account-wide settings.")


@settings_app.command("show")
def show_cmd(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """Every account setting with its value (defaults included)."""
    with workspace(data_dir) as ws, transaction(ws.engine) as session:
        values = account.all_values(session)
    if json_out:
        emit_json(values)
        return
    for key, value in values.items():
        shown = value if isinstance(value, str) else str(value).lower()
        out.print(f"{key} = {shown}  [dim]{account.DEFINITIONS[key].help}[/]")


@settings_app.command("set")
def set_cmd(
    key: Annotated[str, typer.Argument(help="Setting name, e.g. tracking.exclude_machine_events")],
    value: Annotated[
        str, typer.Argument(help="true or false, a whole number, or a time zone name")
    ],
    data_dir: DataDir = None,
) -> None:
    """Change an account setting (audited)."""
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                stored = account.do_set_setting(session, key, value, actor=actor_of(ws))
        except account.SettingError as exc:
            fail(str(exc), 2)
    out.print(f"{key} = {stored if isinstance(stored, str) else str(stored).lower()}")
