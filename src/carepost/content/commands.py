"""`carepost template ...`: templates are checked when saved and versioned."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy import select

from carepost.cli_support import DataDir, JsonFlag, actor_of, emit_json, err, fail, out, workspace
from carepost.content.models import Template
from carepost.content.service import add_template
from carepost.content.template import TemplateProblem, TemplateRejected, TemplateSpec, check
from carepost.db import transaction

template_app = typer.Typer(no_args_is_help=True, help="Message templates.")

FileArg = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Template file (TOML).")
]


class TemplateFileError(ValueError):
    pass


def load_spec(path: Path) -> TemplateSpec:
    """A TOML template file: name, message_class, subject, phi_fields, html or html_file,
    optional text or text_file, secure_delivery. Files are relative to the TOML."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TemplateFileError(f"{path}: {exc}") from None
    missing = [k for k in ("name", "message_class", "subject") if k not in data]
    if "html" not in data and "html_file" not in data:
        missing.append("html or html_file")
    if missing:
        raise TemplateFileError(f"{path}: missing {', '.join(missing)}")

    def part(key: str) -> str | None:
        if f"{key}_file" in data:
            return (path.parent / str(data[f"{key}_file"])).read_text()
        value = data.get(key)
        return None if value is None else str(value)

    html = part("html")
    assert html is not None
    fields = data.get("phi_fields", [])
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise TemplateFileError(f"{path}: phi_fields must be a list of names")
    return TemplateSpec(
        name=str(data["name"]),
        subject=str(data["subject"]),
        html=html,
        message_class=str(data["message_class"]),
        phi_fields=tuple(fields),
        text=part("text"),
        secure_delivery=bool(data.get("secure_delivery", False)),
    )


def _problems(problems: list[TemplateProblem], json_out: bool) -> None:
    if json_out:
        emit_json({"ok": False, "problems": [p.as_dict() for p in problems]})
    else:
        for p in problems:
            err.print(f"  {p}")
    fail(f"{len(problems)} problem(s); the template was not saved")


@template_app.command("check")
def template_check(file: FileArg, json_out: JsonFlag = False) -> None:
    """Check a template file against every save-time rule; save nothing."""
    try:
        spec = load_spec(file)
    except TemplateFileError as exc:
        fail(str(exc), 2)
    problems = check(spec)
    if problems:
        _problems(problems, json_out)
    if json_out:
        emit_json({"ok": True, "problems": []})
    else:
        out.print(f"template {spec.name!r} passes every check")


@template_app.command("add")
def template_add(file: FileArg, json_out: JsonFlag = False, data_dir: DataDir = None) -> None:
    """Check and save a template as the next version of its name."""
    try:
        spec = load_spec(file)
    except TemplateFileError as exc:
        fail(str(exc), 2)
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                row = add_template(session, spec, actor=actor_of(ws))
        except TemplateRejected as exc:
            _problems(exc.problems, json_out)
    payload = {"id": row.id, "name": row.name, "version": row.version}
    if json_out:
        emit_json(payload)
    else:
        out.print(f"template {row.name!r} version {row.version} saved as {row.id}")


@template_app.command("list")
def template_list(json_out: JsonFlag = False, data_dir: DataDir = None) -> None:
    """Saved templates, every version."""
    with workspace(data_dir) as ws, transaction(ws.engine) as session:
        rows = session.scalars(select(Template).order_by(Template.name, Template.version)).all()
        items = [
            {
                "id": r.id,
                "name": r.name,
                "version": r.version,
                "class": r.message_class,
                "phi_fields": r.phi_fields.split(),
            }
            for r in rows
        ]
    if json_out:
        emit_json(items)
        return
    table = Table("id", "name", "version", "class", "phi fields")
    for r in rows:
        table.add_row(r.id, r.name, str(r.version), r.message_class, r.phi_fields or "-")
    out.print(table)
