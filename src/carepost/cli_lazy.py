"""Command groups imported when they are used, not when `carepost` starts.

Each group's module pulls in what its commands need (numpy for segments, httpx for the
doctor, YAML and the journey language, FastAPI for `serve`...). Importing them all made
every command, `--help` included, pay about two seconds of imports on a slow machine;
now a command pays for its own group only. `--help` at the top still lists everything,
so it imports every group.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

# name -> "module:attribute". The attribute is a Typer app (a group), a function (one
# command), or, named with a trailing "()", a function that builds and returns the app.
LAZY: dict[str, str] = {
    "api": "carepost.api.commands:api_app",
    "apikey": "carepost.staff.commands:apikey_app",
    "bounce": "carepost.bounces.commands:bounce_app",
    "breakglass": "carepost.staff.commands:breakglass_app",
    "campaign": "carepost.campaigns.commands:campaign_app",
    "capture": "carepost.delivery.commands:capture_app",
    "consent": "carepost.consent.commands:consent_app",
    "demo-data": "carepost.segments.commands:demo_data",
    "dkim": "carepost.delivery.commands:dkim_app",
    "doctor": "carepost.doctor.commands:doctor_app",
    "event": "carepost.journeys.commands:event_app",
    "journey": "carepost.journeys.commands:journey_app",
    "message": "carepost.messages.commands:message_group()",
    "outbox": "carepost.delivery.commands:outbox_app",
    "report": "carepost.reports.commands:report_app",
    "role": "carepost.staff.commands:role_app",
    "segment": "carepost.segments.commands:segment_app",
    "sender": "carepost.campaigns.commands:sender_app",
    "serve": "carepost.web.commands:serve",
    "settings": "carepost.account.commands:settings_app",
    "suppress": "carepost.consent.commands:suppress_app",
    "template": "carepost.content.commands:template_app",
    "tracking": "carepost.tracking.commands:tracking_app",
    "user": "carepost.staff.commands:user_app",
    "worker": "carepost.delivery.commands:worker",
}


def load(name: str) -> Any:
    """The click command for `name`, importing its module: a Typer app becomes a group
    even when it has one command (as `add_typer` made it), a function one command."""
    module, _, attribute = LAZY[name].partition(":")
    target = getattr(importlib.import_module(module), attribute.removesuffix("()"))
    if attribute.endswith("()"):
        target = target()
    if isinstance(target, typer.Typer):
        command: Any = typer.main.get_group(target)
    else:
        single = typer.Typer(add_completion=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(TyperGroup):
    """The root group: eager commands as usual, plus the LAZY ones on demand."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY:
            command = load(cmd_name)
            self.add_command(command, cmd_name)
        return command
