"""`carepost message send|status`: one-off messages from the command line (the same
service as POST /api/v1/messages). The command line on the server is the system
principal; its actor is the workspace's."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from carepost.cli_support import DataDir, JsonFlag, actor_of, emit_json, fail, out, workspace
from carepost.db import transaction
from carepost.messages.data import DataRejected
from carepost.messages.service import MessageError, do_send_message, message_status
from carepost.staff.principal import Principal


def _data(data: str | None, data_file: Path | None) -> dict[str, Any]:
    if data is not None and data_file is not None:
        fail("give --data or --data-file, not both", 2)
    raw = (
        sys.stdin.read()
        if data_file == Path("-")
        else data_file.read_text(encoding="utf-8")
        if data_file is not None
        else data or "{}"
    )
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # The position only: the text is PHI.
        fail(f"--data: not JSON (at character {exc.pos})", 2)
    if not isinstance(parsed, dict):
        fail("--data: a JSON object of template data fields", 2)
    return parsed


def send(
    contact: Annotated[str, typer.Option(help="The recipient contact's id")],
    template: Annotated[str, typer.Option(help="Template id or name (latest version)")],
    message_class: Annotated[
        str, typer.Option("--class", help="treatment, operations or transactional")
    ],
    data: Annotated[
        str | None,
        typer.Option(
            help="JSON object: a value per `data_<name>` field of the template. It is PHI "
            "and stays in shell history; prefer --data-file."
        ),
    ] = None,
    data_file: Annotated[
        Path | None, typer.Option(help="The data as a JSON file ('-': standard input)")
    ] = None,
    sender: Annotated[
        str | None, typer.Option(help="Sender profile (default: the only one)")
    ] = None,
    topic: Annotated[str | None, typer.Option(help="Opt-out topic (default: the class)")] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Queue one message in the one-off lane; a running worker sends it after the consent
    gate allows it. Prints the message id (for `carepost message evidence ID`)."""
    values = _data(data, data_file)
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                sent = do_send_message(
                    session,
                    ws.keyring,
                    principal=Principal.system(actor_of(ws)),
                    contact_id=contact,
                    template=template,
                    message_class=message_class,
                    data=values,
                    sender=sender,
                    topic=topic,
                    at=datetime.now(UTC),
                )
        except (MessageError, DataRejected) as exc:
            fail(str(exc))
    if json_out:
        emit_json(sent.as_dict())
        return
    out.print(f"message {sent.id} queued (campaign {sent.campaign_id}, {sent.message_class})")


def status(
    message_id: Annotated[str, typer.Argument()],
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """A one-off message's state, reason code and timeline (no PHI)."""
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                found = message_status(
                    session, principal=Principal.system(actor_of(ws)), message_id=message_id
                )
        except MessageError as exc:
            fail(str(exc))
    if json_out:
        emit_json(found.as_dict())
        return
    out.print(f"message {found.id}: {found.status} ({found.reason or '-'})")
    for state, at in found.timeline:
        out.print(f"  {at.isoformat()}  {state}")


def message_group() -> typer.Typer:
    """`carepost message`: evidence (delivery) with send and status (here); the CLI loads
    it when `message` is asked for (cli_lazy)."""
    from carepost.delivery.commands import message_app

    if not any(c.name == "send" for c in message_app.registered_commands):
        message_app.command("send")(send)
        message_app.command("status")(status)
    return message_app
