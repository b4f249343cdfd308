"""`carepost bounce classify FILE...`: read bounce, complaint and auto-reply messages from
files and say what each one means. Offline: no workspace, no database. Errors name the file
and the kind of failure, never the message's content.

`carepost bounce listen` receives them over SMTP and acts (bounces/listener.py), and
`carepost bounce rates` reports bounce and complaint rates (bounces/stats.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from carepost.bounces.classify import Classification, classify
from carepost.bounces.parse import ParseError, parse_message
from carepost.cli_support import DataDir, JsonFlag, emit_json, err, fail, out, workspace

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


@bounce_app.command("rates")
def rates_cmd(
    campaign: Annotated[str | None, typer.Option("--campaign", help="One campaign id.")] = None,
    domain: Annotated[str | None, typer.Option("--domain", help="One sending domain.")] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Bounce and complaint rates per campaign (its whole life) and per sending domain (the
    last 24 hours), and whether the complaint rate is over the 0.3% limit."""
    from datetime import UTC, datetime

    from sqlalchemy.orm import Session

    from carepost.bounces import stats
    from carepost.bounces.rates import RatePolicy

    with workspace(data_dir) as ws, Session(ws.engine) as session:
        policy = RatePolicy(min_delivered=ws.settings.bounce_complaint_min_delivered)
        doc = stats.rates(
            session,
            at=datetime.now(UTC),
            policy=policy,
            campaign_id=campaign,
            domain=domain,
        )
    if campaign is not None and not doc["campaigns"]:
        fail(f"no campaign with id {campaign!r}")
    if json_out:
        emit_json(doc)
        return
    out.print(
        f"complaint limit {doc['limit']:.1%} (alert from {doc['min_delivered']} delivered); "
        f"domains over the last {doc['domain_window_hours']:g} h",
        markup=False,
    )
    for kind, rows in (("campaign", doc["campaigns"]), ("domain", doc["domains"])):
        for r in rows:
            flag = "  OVER LIMIT" if r["over_limit"] else ""
            flag += "  (alert open)" if r["alert_open"] else ""
            out.print(
                f"{kind} {r['key']}: sent {r['sent']}, rejected {r['rejected']}, "
                f"hard {r['hard']} ({r['hard_rate']:.2%}), soft {r['soft']} "
                f"({r['soft_rate']:.2%}), complaints {r['complaints']} "
                f"({r['complaint_rate']:.3%}){flag}",
                markup=False,
            )


@bounce_app.command("listen")
def listen_cmd(
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port [CAREPOST_BOUNCE_PORT; 2526].")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON line per message received.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Receive bounces and complaints over SMTP (STARTTLS offered) until interrupted: link
    each to its message, record it, suppress hard bounces and complainers. Prints ids and
    outcomes only, never an address or content."""
    import signal
    import threading

    from carepost.bounces.inbound import Received
    from carepost.bounces.listener import listener_for

    def show(result: Received) -> None:
        doc = {k: v for k, v in dataclasses.asdict(result).items() if v not in ("", None, ())}
        if json_out:
            emit_json_line(doc)
        else:
            out.print(" ".join(f"{k}={v}" for k, v in doc.items()), markup=False)

    with workspace(data_dir) as ws:
        try:
            listener = listener_for(ws, port=port, on_received=show)
        except (ValueError, OSError) as exc:
            fail(f"cannot start the bounce listener: {exc}")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            listener.start()
        except Exception as exc:  # aiosmtpd wraps bind errors in its own types
            fail(f"cannot listen on {listener.host}:{listener.port} ({type(exc).__name__})")
        started = {"listening": f"{listener.host}:{listener.port}", "starttls": True}
        if json_out:
            emit_json_line(started)
        else:
            err.print(f"bounce listener on {listener.host}:{listener.port} (STARTTLS offered)")
        try:
            stop.wait()
        finally:
            listener.stop()
        totals = {"stopped": True, "counts": listener.stats.snapshot()}
        if json_out:
            emit_json_line(totals)
        else:
            err.print(f"stopped; {totals['counts']}")


def emit_json_line(value: Any) -> None:
    import sys

    import orjson

    sys.stdout.write(orjson.dumps(value).decode() + "\n")
    sys.stdout.flush()
