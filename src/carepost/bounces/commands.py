"""`carepost bounce classify FILE...`: read bounce, complaint and auto-reply messages from
files and say what each one means. Offline: no workspace, no database. Errors name the file
and the kind of failure, never the message's content."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from carepost.bounces.classify import Classification, classify
from carepost.bounces.parse import ParseError, parse_message
from carepost.cli_support import JsonFlag, emit_json, err, out

bounce_app = typer.Typer(no_args_is_help=True, help="Bounces, complaints and auto-replies.")


def as_dict(result: Classification) -> dict[str, Any]:
    doc: dict[str, Any] = {"category": result.category, "mixed": result.mixed}
    if result.feedback_type:
        doc["feedback_type"] = result.feedback_type
    doc["recipients"] = [
        {
            "address": v.address,
            "status": v.status,
            "reply_code": v.reply_code,
            "bounce": v.severity,
            "reason": v.reason,
        }
        for v in result.recipients
    ]
    return doc


def classify_file(path: Path) -> Classification:
    """Raises ParseError or OSError; their text names the problem, not the content."""
    return classify(parse_message(path.read_bytes()))


@bounce_app.command("classify")
def classify_cmd(
    files: Annotated[list[Path], typer.Argument(help="Messages (.eml, raw RFC 5322 bytes).")],
    json_out: JsonFlag = False,
) -> None:
    """Say for each message whether it is a hard or soft bounce, a complaint, an
    auto-reply, a delay or delivery notice, or not a bounce; and per recipient why."""
    results: list[dict[str, Any]] = []
    failed = 0
    for path in files:
        try:
            result = classify_file(path)
        except OSError as exc:
            failed += 1
            reason = exc.strerror or type(exc).__name__
            results.append({"file": str(path), "error": f"cannot read: {reason}"})
        except (ParseError, ValueError, LookupError, UnicodeError) as exc:
            failed += 1
            # ParseError texts are ours and content-free; anything else is summarised by type.
            why = str(exc) if isinstance(exc, ParseError) else type(exc).__name__
            results.append({"file": str(path), "error": f"cannot parse: {why}"})
        else:
            results.append({"file": str(path), **as_dict(result)})
    if json_out:
        emit_json({"files": results, "failed": failed})
    else:
        for doc in results:
            _print_text(doc)
    if failed:
        raise typer.Exit(1)


def _print_text(doc: dict[str, Any]) -> None:
    if "error" in doc:
        # A file name may hold "[...]": escaped, so rich shows it rather than parsing it.
        problem = escape(f"{doc['file']}: {doc['error']}")
        err.print(f"[bold red]error:[/] {problem}", markup=True)
        return
    extra = " (mixed hard and soft)" if doc["mixed"] else ""
    if doc.get("feedback_type"):
        extra += f" feedback-type={doc['feedback_type']}"
    out.print(f"{doc['file']}: {doc['category']}{extra}", markup=False)
    for r in doc["recipients"]:
        fields = [r["address"], r["status"] or "-", r["reply_code"] or "-", r["bounce"] or "-"]
        out.print("  " + "  ".join(fields) + f"  ({r['reason']})", markup=False)
