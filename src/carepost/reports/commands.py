"""`carepost report campaign ID [--json] [--include-machine] [--csv FILE] [--chart FILE]`:
tables for people, one JSON document for machines, a CSV export and an SVG chart. The
report is read in one consistent transaction, then its reading is audited, then the
files are written (each whole or not at all), then it is printed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from carepost.cli_support import DataDir, JsonFlag, actor_of, emit_json, err, fail, out, workspace
from carepost.db import transaction
from carepost.reports import chart, csv_export, files, service
from carepost.reports.campaign import CampaignReport
from carepost.reports.measures import Tally
from carepost.reports.splits import DEFAULT_MIN_DOMAIN_RECIPIENTS, Bucket

report_app = typer.Typer(no_args_is_help=True, help="Reports: campaign statistics.")


@report_app.command("campaign")
def campaign_cmd(
    campaign: Annotated[
        str, typer.Argument(help="Campaign id, or its name when no other campaign has it.")
    ],
    json_out: JsonFlag = False,
    include_machine: Annotated[
        bool,
        typer.Option(
            "--include-machine",
            help="Count machine opens and clicks in the headline numbers for this report "
            "(overrides the account setting tracking.exclude_machine_events).",
        ),
    ] = False,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Also write every number to this CSV file.")
    ] = None,
    chart_file: Annotated[
        Path | None,
        typer.Option("--chart", help="Also draw opens and clicks over time to this .svg file."),
    ] = None,
    min_domain_recipients: Annotated[
        int,
        typer.Option(
            "--min-domain-recipients",
            min=1,
            help="Pool recipient domains with fewer recipients into '(other domains)'.",
        ),
    ] = DEFAULT_MIN_DOMAIN_RECIPIENTS,
    no_clauses: Annotated[
        bool,
        typer.Option(
            "--no-clauses",
            help="Skip the segment clause split (it decrypts the recipients' records, "
            "which is audited).",
        ),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Delivery, bounces, complaints, unsubscribes, opens and clicks (human and machine
    apart) of one campaign, with splits by domain, link, segment clause, day and hour."""
    try:
        if csv_file is not None:
            files.check_target(csv_file, "--csv", (".csv",))
        if chart_file is not None:
            files.check_target(chart_file, "--chart", (".svg",))
    except files.TargetError as exc:
        fail(str(exc), 2)
    if csv_file is not None and chart_file is not None and csv_file == chart_file:
        fail("--csv and --chart name the same file", 2)
    options = service.Options(
        include_machine=include_machine,
        min_domain_recipients=min_domain_recipients,
        clauses=not no_clauses,
    )
    exports = [kind for kind, path in (("csv", csv_file), ("svg", chart_file)) if path]
    with workspace(data_dir) as ws:
        actor = actor_of(ws)
        try:
            report = service.campaign_report(
                ws.engine, ws.keyring, campaign, options=options, actor=actor
            )
        except service.ReportError as exc:
            fail(str(exc), 2)
        with transaction(ws.engine) as session:
            service.do_record_view(session, report, actor=actor, exports=exports)
    notes = err if json_out else out
    try:
        if csv_file is not None:
            files.write_atomically(csv_file, csv_export.to_csv(report))
            notes.print(f"wrote {csv_file}")
        if chart_file is not None:
            title = f"Opens and clicks: {report.campaign.name}"
            svg = chart.render(title, report.time.step, report.time.timeline)
            files.write_atomically(chart_file, svg.encode())
            notes.print(f"wrote {chart_file}")
    except OSError as exc:
        fail(f"could not write the export: {exc.strerror or exc}")
    if json_out:
        emit_json(report.as_dict())
        return
    show(report)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _pops(t: Tally, include_machine: bool) -> list[str]:
    d = t.as_dict(include_machine)
    return [str(d["headline"]), str(d["human"]), str(d["machine"]), str(d["unknown"])]


def _table(title: str, label: str, *numbers: str) -> Table:
    """A compact table: the first column folds long values (domains, URLs, clauses),
    the numbers are right-aligned and never wrapped."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    table.add_column(label, overflow="fold", ratio=1)
    for header in numbers:
        table.add_column(header, justify="right", no_wrap=True)
    return table


def show(report: CampaignReport) -> None:
    """The report as tables. Values typed by others (domains, URLs, clauses, reason
    codes) go in as Text, so they are shown literally and never read as markup."""
    c = report.campaign
    m = report.include_machine
    d = report.delivery
    if not report.include_machine:
        basis = "machine events left out (account setting; --include-machine counts them)"
    elif report.setting_excludes_machine:
        basis = "machine events included (--include-machine)"
    else:
        basis = "machine events included (account setting)"
    out.print(Text(f"Campaign {c.name} ({c.id})", style="bold"))
    out.print(Text(f"{c.status} · {c.message_class} · {c.channel}/{c.topic}"))
    out.print(Text(f"headline numbers: {basis}"))

    delivery = _table("Delivery", "", "messages")
    for label, n in (
        ("recipients", d.recipients),
        ("pending (queued, in flight)", d.pending),
        ("denied by the consent gate", d.denied),
        ("sent (accepted by the receiving server)", d.sent),
        ("delivered (sent, not reported bounced)", d.delivered),
        ("deferred (will retry)", d.deferred),
        ("failed", d.failed),
        ("unknown (connection lost after the body)", d.unknown),
        ("bounced hard", d.bounced_hard),
        ("bounced soft", d.bounced_soft),
        ("complaints", d.complaints),
        ("unsubscribes (contacts)", d.unsubscribes),
    ):
        delivery.add_row(label, str(n))
    out.print(delivery)
    for title, counts in (
        ("Denied by reason (contacts; one may have several)", d.denied_by_reason),
        ("Failed by reason", d.failed_by_reason),
        ("Unsubscribes by source (contacts)", d.unsubscribes_by_source),
    ):
        if counts:
            table = _table(title, "reason", "count")
            for key, n in counts.items():
                table.add_row(Text(key), str(n))
            out.print(table)

    e = report.engagement
    rates = e.rates(d.delivered, m)
    eng = _table("Opens and clicks", "", "headline", "human", "machine", "unknown")
    eng.add_row("opens (unique messages)", *_pops(e.opens_unique, m))
    eng.add_row("opens (events)", *_pops(e.opens_total, m))
    eng.add_row("clicks (unique messages)", *_pops(e.clicks_unique, m))
    eng.add_row("clicks (events)", *_pops(e.clicks_total, m))
    for key, label in (
        ("open_rate", "open rate (of delivered)"),
        ("click_rate", "click rate (of delivered)"),
        ("click_to_open_rate", "click-to-open rate"),
    ):
        eng.add_row(
            label, *(_pct(rates[p][key]) for p in ("headline", "human", "machine", "unknown"))
        )
    out.print(eng)
    links = report.links
    out.print(
        f"honeypot link hits (machine, never clicks): {links.honeypot_total} "
        f"({links.honeypot_unique} messages); clicks on unknown links: "
        f"{links.unattributed_total}"
    )

    dom = _table(
        f"By recipient domain (fewer than {report.domains.min_recipients} recipients: pooled)",
        "domain",
        "rcpt",
        "deliv.",
        "hard/soft",
        "compl.",
        "opens",
        "open %",
        "click %",
    )
    for r in report.domains.rows:
        rd = r.as_dict(m)
        label = f"{r.label} ({r.domains} domains)" if r.kind == "pooled" else r.label
        dom.add_row(
            Text(label),
            str(r.recipients),
            str(r.delivered),
            f"{r.bounced_hard}/{r.bounced_soft}",
            str(r.complaints),
            str(r.engagement.opens_unique.headline(m)),
            _pct(rd["open_rate"]),
            _pct(rd["click_rate"]),
        )
    out.print(dom)

    lt = _table("By link (clicks)", "# destination", "unique", "human", "machine", "events h/m")
    for lr in links.rows:
        lt.add_row(
            Text(f"{lr.index} {lr.url}"),
            str(lr.clicks_unique.headline(m)),
            str(lr.clicks_unique.human),
            str(lr.clicks_unique.machine),
            f"{lr.clicks_total.human}/{lr.clicks_total.machine}",
        )
    out.print(lt)

    cs = report.clauses
    if cs.available:
        at = cs.evaluated_at.isoformat() if cs.evaluated_at else "-"
        ct = _table(
            f"By segment clause ({cs.segment} v{cs.version}, evaluated at {at})",
            "clause",
            "rcpt",
            "deliv.",
            "opens h/m",
            "clicks h/m",
            "open %",
        )
        for cr in cs.rows:
            cd = cr.as_dict(m)
            o, k = cr.engagement.opens_unique, cr.engagement.clicks_unique
            ct.add_row(
                Text(cr.clause),
                str(cr.recipients),
                str(cr.delivered),
                f"{o.human}/{o.machine}",
                f"{k.human}/{k.machine}",
                _pct(cd["open_rate"]),
            )
        out.print(ct)
    else:
        out.print(Text(f"By segment clause: not available ({cs.reason})"))

    time = report.time
    if not time.hours:
        out.print("By day and hour: no opens or clicks recorded")
        return
    _time_table(
        "By day (UTC; events)", time.by_day, [b.start.date().isoformat() for b in time.by_day]
    )
    busy = [b for b in time.by_hour_of_day if b.opens.everything or b.clicks.everything]
    _time_table(
        "By hour of day (UTC; events; hours with none left out)",
        busy,
        [f"{b.start.hour:02d}:00" for b in busy],
    )


def _time_table(title: str, buckets: Sequence[Bucket], labels: Sequence[str]) -> None:
    table = _table(title, "", "opens human", "opens machine", "clicks human", "clicks machine")
    for label, b in zip(labels, buckets, strict=True):
        table.add_row(
            label,
            str(b.opens.human),
            str(b.opens.machine),
            str(b.clicks.human),
            str(b.clicks.machine),
        )
    out.print(table)
