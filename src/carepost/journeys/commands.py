"""`carepost journey ...` and `carepost event send`.

`validate` checks a definition (each problem with its step and field) and `simulate`
dry-runs it over a generated population on a simulated clock: neither needs a workspace.
`publish|pause|resume|list|enrol|run|report|explain` work on the workspace's published
journeys (journeys/service.py, engine.py, report.py); `event send` records a named event
and matches it to journeys (journeys/events.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer

from carepost.cli_support import DataDir, JsonFlag, actor_of, emit_json, err, fail, out, workspace
from carepost.db import transaction
from carepost.journeys import definition as D
from carepost.journeys import events, funnel_chart, migration, report, service
from carepost.journeys.document import load
from carepost.journeys.engine import JourneyEngine, TickReport
from carepost.journeys.simulate import Model, simulate
from carepost.journeys.webhook import WebhookConfig, WebhookConfigError

journey_app = typer.Typer(no_args_is_help=True, help="Journeys: automated workflows.")
event_app = typer.Typer(no_args_is_help=True, help="Named events (start and move journeys).")


@journey_app.command("validate")
def validate_cmd(
    file: Annotated[Path, typer.Argument(help="A journey definition (YAML or JSON).")],
    json_out: JsonFlag = False,
) -> None:
    """Check a journey definition: every problem is named by its step and field."""
    data = _read(file)
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


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        fail(f"{file}: cannot read: {exc.strerror or type(exc).__name__}")


Rate = Annotated[float, typer.Option(min=0.0, max=1.0)]


@journey_app.command("simulate")
def simulate_cmd(
    file: Annotated[Path, typer.Argument(help="A journey definition (YAML or JSON).")],
    population: Annotated[int, typer.Option(min=1, max=1_000_000)] = 10_000,
    days: Annotated[int, typer.Option(min=1, max=3650)] = 30,
    seed: Annotated[int, typer.Option(help="Same seed, same result.")] = 1,
    start: Annotated[
        str | None, typer.Option(help="Simulated start, ISO 8601 with offset [now]")
    ] = None,
    open_rate: Rate = 0.25,
    click_rate: Rate = 0.2,
    event_rate: Rate = 0.1,
    attribute_rate: Rate = 0.5,
    marketing_per_week: Annotated[int, typer.Option(min=0)] = 3,
    json_out: JsonFlag = False,
) -> None:
    """Dry-run a journey over a generated population: contacts per step and messages per
    class, without sending or writing anything (the model is in journeys/simulate.py)."""
    try:
        journey = load(_read(file))
    except D.DefinitionError as exc:
        fail(f"{file} is not a valid journey:\n{exc}")
    try:
        begin = datetime.fromisoformat(start) if start else datetime.now(UTC)
    except ValueError:
        fail("--start: an ISO 8601 instant with its offset, e.g. 2027-01-04T00:00Z", 2)
    if begin.tzinfo is None:
        fail("--start needs its UTC offset (e.g. Z)", 2)
    model = Model(
        open_rate=open_rate,
        click_rate=click_rate,
        event_rate=event_rate,
        attribute_rate=attribute_rate,
        marketing_per_week=marketing_per_week,
    )
    report = simulate(
        journey, population=population, days=days, start=begin, seed=seed, model=model
    )
    if json_out:
        emit_json(report.as_dict())
        return
    out.print(
        f"journey {journey.name!r}: {report.enrolled} of {population} enrolled over {days} days; "
        f"{report.completed} completed, {report.goal_reached} reached the goal, "
        f"{report.still_active} still in the journey"
    )
    for step_id, counts in report.steps.items():
        exits = ", ".join(f"{k} {v}" for k, v in sorted(counts.exited.items()))
        out.print(
            f"  {step_id:<24} reached {counts.entered:>8}  waiting {counts.waiting:>7}"
            + (f"  exited: {exits}" if exits else "")
        )
    sent = ", ".join(f"{cls} {n}" for cls, n in sorted(report.messages.items())) or "none"
    out.print(f"messages: {sent}; frequency-capped sends skipped: {report.capped}")


@journey_app.command("publish")
def publish_cmd(
    file: Annotated[Path, typer.Argument(help="A journey definition (YAML or JSON).")],
    sender: Annotated[str, typer.Option(help="Sender profile id its messages go out under.")],
    topic: Annotated[
        str | None, typer.Option(help="Consent topic of its messages [the journey's name]")
    ] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Publish a new version: it takes new enrolments; running ones finish on theirs."""
    data = _read(file)
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                done = service.do_publish_journey(
                    session, data, sender_id=sender, topic=topic, actor=actor_of(ws)
                )
        except D.DefinitionError as exc:
            fail(f"{file} cannot be published:\n{exc}")
        except service.JourneyError as exc:
            fail(str(exc), 2)
    for warning in done.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    if json_out:
        emit_json(
            {"name": done.row.name, "version": done.row.version, "warnings": list(done.warnings)}
        )
        return
    out.print(f"published journey {done.row.name!r} version {done.row.version}")


def _set_status(name: str, status: str, data_dir: Path | None) -> None:
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                service.do_set_status(session, name, status, actor=actor_of(ws))
        except service.JourneyError as exc:
            fail(str(exc), 2)
    out.print(f"journey {name!r} is {status}")


@journey_app.command("pause")
def pause_cmd(name: str, data_dir: DataDir = None) -> None:
    """Pause a journey: no enrolments, no steps, its queued messages held."""
    _set_status(name, "paused", data_dir)


@journey_app.command("resume")
def resume_cmd(name: str, data_dir: DataDir = None) -> None:
    """Resume a paused journey."""
    _set_status(name, "active", data_dir)


@journey_app.command("list")
def list_cmd(json_out: JsonFlag = False, data_dir: DataDir = None) -> None:
    """Published journeys (newest version) with their enrolments by status."""
    with workspace(data_dir) as ws, transaction(ws.engine) as session:
        rows = service.list_journeys(session)
    if json_out:
        emit_json([r.as_dict() for r in rows])
        return
    for r in rows:
        out.print(
            f"{r.name:<24} v{r.version:<3} {r.status:<7} {r.trigger:<10} active {r.active} "
            f"waiting {r.waiting} exited {r.exited}"
        )


@journey_app.command("enrol")
def enrol_cmd(
    name: str,
    contact: Annotated[list[str], typer.Option(help="Contact id (repeat for more).")],
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Enrol contacts by hand (the journey's re-entry policy applies)."""
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                got = service.do_enrol(session, name, contact, actor=actor_of(ws))
        except service.JourneyError as exc:
            fail(str(exc), 2)
    if json_out:
        emit_json({"enrolled": len(got.enrolled), "refused": got.refused})
        return
    refused = ", ".join(f"{k} {v}" for k, v in sorted(got.refused.items())) or "none"
    out.print(f"enrolled {len(got.enrolled)} in {name!r}; refused: {refused}")


@journey_app.command("run")
def run_cmd(
    once: Annotated[bool, typer.Option(help="Run until nothing is due, then stop.")] = False,
    batch: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between idle polls.")] = 5.0,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Move enrolments along: due timers, awaited engagement, sends into the outbox."""
    import time

    with workspace(data_dir) as ws:
        try:
            hooks = WebhookConfig.from_settings(
                ws.settings.journey_webhook_secret.get_secret_value(),
                ws.settings.journey_webhook_allow_networks,
            )
        except WebhookConfigError as exc:
            fail(str(exc), 2)
        engine = JourneyEngine(ws.engine, batch=batch, ring=ws.keyring, webhooks=hooks)
        total = TickReport()
        try:
            while True:
                total.add(engine.run_until_idle())
                if once:
                    break
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
    summary = {
        "claimed": total.claimed,
        "transitions": total.transitions,
        "sends": total.sends,
        "woken_by_engagement": total.woken_by_engagement,
        "enrolled_by_scans": total.scan_enrolled,
        "webhook_calls": total.calls,
        "exits": dict(sorted(total.exits.items())),
    }
    if json_out:
        emit_json(summary)
        return
    out.print(
        f"{total.transitions} transitions, {total.sends} messages queued, "
        f"{total.woken_by_engagement} woken by engagement, {total.scan_enrolled} enrolled by "
        f"scans, {total.calls} webhook calls"
    )


@journey_app.command("report")
def report_cmd(
    name: str,
    chart: Annotated[
        Path | None, typer.Option(help="Also write the funnel as an SVG file.")
    ] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Per step: entered, completed, waiting, exited, goal reached; sends and human opens
    and clicks; the funnel and the step where most contacts drop off."""
    with workspace(data_dir) as ws, transaction(ws.engine) as session:
        try:
            got = report.journey_report(session, name)
        except service.JourneyError as exc:
            fail(str(exc), 2)
    if chart is not None:
        try:
            chart.write_text(funnel_chart.render(got), encoding="utf-8")
        except OSError as exc:
            fail(f"--chart: cannot write {chart} ({exc.strerror})", 2)
    if json_out:
        emit_json(got.as_dict())
        return
    out.print(f"journey {name!r}: {got.enrolments} enrolments {got.statuses}")
    for s in got.steps:
        exits = ", ".join(f"{k} {v}" for k, v in sorted(s.exited.items()))
        line = (
            f"  {s.step:<20} {s.kind:<14} entered {s.entered:>7} completed {s.completed:>7} "
            f"waiting {s.waiting:>6} goal {s.goal_reached:>5}"
        )
        if s.sends is not None:
            line += f" sent {s.sends} opened {s.human_opens} clicked {s.human_clicks}"
        retired = "" if s.current else "  (earlier versions only)"
        out.print(line + (f"  exited: {exits}" if exits else "") + retired)
    out.print(f"drop-off step: {got.drop_off or 'none'}")


@journey_app.command("migrate")
def migrate_cmd(
    name: str,
    from_version: Annotated[int, typer.Option("--from-version", min=1)],
    to_version: Annotated[
        int | None, typer.Option("--to-version", min=1, help="Default: the newest version.")
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="old-step=new-step, for steps renamed or removed."),
    ] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Move a version's running enrolments to another version: each to the step of the
    same id, or where --map says. All or nothing; refused with the list of steps that
    have nowhere to go."""
    try:
        mapping = migration.parse_map(map_ or [])
        with workspace(data_dir) as ws, transaction(ws.engine) as session:
            moved = migration.do_migrate_enrolments(
                session, name, from_version, to_version, mapping, actor=actor_of(ws)
            )
    except service.JourneyError as exc:
        fail(str(exc), 2)
    if json_out:
        emit_json({"moved": moved})
        return
    out.print(f"moved {moved} enrolments of {name!r} from version {from_version}")


@journey_app.command("explain")
def explain_cmd(
    contact: Annotated[str, typer.Option(help="Contact id.")],
    journey: Annotated[str, typer.Option(help="Journey name.")],
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """The path a contact took through a journey, with why each branch went its way."""
    with workspace(data_dir) as ws, transaction(ws.engine) as session:
        paths = report.explain(session, journey, contact)
    if json_out:
        emit_json([p.as_dict() for p in paths])
        return
    if not paths:
        fail(f"contact {contact} was never enrolled in {journey!r}", 1)
    for p in paths:
        out.print(f"enrolment {p.enrolment}: {p.status} ({p.exit_reason or 'in progress'})")
        for step in p.steps:
            detail = f"  {step.detail}" if step.detail else ""
            out.print(f"  {step.at.isoformat()}  {step.step:<20} {step.outcome}{detail}")


@event_app.command("send")
def event_send_cmd(
    name: Annotated[str, typer.Argument(help="Event name, e.g. purchase or form_submitted:x")],
    contact: Annotated[str, typer.Option(help="Contact id.")],
    props: Annotated[str, typer.Option(help="Properties as a JSON object.")] = "{}",
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Record a named event: it enrols the contact in journeys it triggers and wakes the
    contact's enrolments waiting for it (exactly once). Properties are not stored."""
    try:
        parsed = events.check_props(orjson.loads(props))
    except orjson.JSONDecodeError as exc:
        fail(f"--props: not JSON (position {exc.pos})", 2)
    except events.EventError as exc:
        fail(str(exc), 2)
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                got = events.do_send_event(session, name, contact, parsed, actor=actor_of(ws))
        except events.EventError as exc:
            fail(str(exc), 2)
    if json_out:
        emit_json(got.as_dict())
        return
    enrolled = ", ".join(f"{k} {v}" for k, v in sorted(got.enrolled.items())) or "none"
    out.print(f"event {name}: enrolled {enrolled}; woke {got.woken}; goal {got.goal_reached}")
