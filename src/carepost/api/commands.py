"""`carepost api purge-idempotency`: drop idempotency keys past their keeping time."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from carepost.cli_support import DataDir, JsonFlag, emit_json, fail, out, workspace
from carepost.clock import system_clock
from carepost.db import transaction

api_app = typer.Typer(no_args_is_help=True, help="The REST API's housekeeping.")


@api_app.command("purge-idempotency")
def purge_idempotency_cmd(
    hours: Annotated[
        float | None,
        typer.Option(help="Keep keys this many hours (24 or more; default: the setting)."),
    ] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Delete Idempotency-Key records older than the keeping time (at least 24 h)."""
    # Here, not at the top: the module brings FastAPI, which no other command needs.
    from carepost.api import idempotency

    with workspace(data_dir) as ws:
        keep = hours if hours is not None else ws.settings.api_idempotency_hours
        if keep < 24:
            fail("--hours: keys are kept at least 24 hours", 2)
        with transaction(ws.engine) as s:
            n = idempotency.purge(s, now=system_clock(), keep=timedelta(hours=keep))
    if json_out:
        emit_json({"purged": n})
        return
    out.print(f"purged {n} idempotency key(s) older than {keep:g} h")
