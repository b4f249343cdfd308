"""The report as one CSV file in long form: every row is (section, item, detail, metric,
value), so every split fits one file and any spreadsheet or dataframe can pivot it.

Cells may hold text chosen by others (link URLs, recipient domains, reason codes, the
segment rule, the campaign name). A spreadsheet runs a cell that starts with `=`, `+`,
`-` or `@` as a formula, and tab, carriage return or NUL first can smuggle one past
naive checks, so such a cell gets a leading single quote (OWASP "CSV Injection"); the
full-width forms of the four signs are treated the same, since some spreadsheets fold
them. Quoting and embedded newlines are left to the csv module. Pure: no I/O.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from carepost.reports.campaign import CampaignReport
from carepost.reports.measures import Tally

HEADER = ("section", "item", "detail", "metric", "value")
DANGEROUS_FIRST = frozenset("=+-@\t\r\0＝＋－＠")
POPULATIONS = ("human", "machine", "unknown", "headline")

Cell = str | int | float | None


def neutralise(value: Cell) -> str:
    """A cell as text that no spreadsheet will evaluate."""
    text = "" if value is None else str(value)
    return "'" + text if text and text[0] in DANGEROUS_FIRST else text


def _tally(prefix: str, tally: Tally, include_machine: bool) -> Iterator[tuple[str, int]]:
    for key, n in tally.as_dict(include_machine).items():
        yield f"{prefix}_{key}", n


def rows(report: CampaignReport) -> Iterator[tuple[Cell, ...]]:
    """Every number of the report as (section, item, detail, metric, value)."""
    m = report.include_machine
    for key, value in report.campaign.as_dict().items():
        yield ("campaign", "", "", key, value)
    yield ("report", "", "", "generated_at", report.generated_at.isoformat())
    yield ("report", "", "", "headline_basis", report.headline_basis)
    yield (
        "report",
        "",
        "",
        "setting_exclude_machine_events",
        str(report.setting_excludes_machine).lower(),
    )
    d = report.delivery.as_dict()
    for key in (
        "recipients",
        "pending",
        "denied",
        "sent",
        "delivered",
        "deferred",
        "failed",
        "unknown",
        "complaints",
        "unsubscribes",
    ):
        yield ("delivery", "", "", key, d[key])
    yield ("delivery", "", "", "bounced_hard", report.delivery.bounced_hard)
    yield ("delivery", "", "", "bounced_soft", report.delivery.bounced_soft)
    for key, rate in d["rates"].items():
        yield ("delivery", "", "", key, rate)
    for code, n in report.delivery.denied_by_reason.items():
        yield ("denied_reason", code, "", "contacts", n)
    for reason, n in report.delivery.failed_by_reason.items():
        yield ("failed_reason", reason, "", "messages", n)
    for source, n in report.delivery.unsubscribes_by_source.items():
        yield ("unsubscribe_source", source, "", "contacts", n)
    e = report.engagement.as_dict(report.delivery.delivered, m)
    for measure in ("opens_unique", "opens_total", "clicks_unique", "clicks_total"):
        for pop in POPULATIONS:
            yield ("engagement", pop, "", measure, e[measure][pop])
    for pop in POPULATIONS:
        for key, rate in e["rates"][pop].items():
            yield ("engagement", pop, "", key, rate)
    links = report.links
    yield ("engagement", "honeypot", "", "hits_total", links.honeypot_total)
    yield ("engagement", "honeypot", "", "hits_unique", links.honeypot_unique)
    yield ("engagement", "unknown_link", "", "clicks_total", links.unattributed_total)
    for drow in report.domains.rows:
        dd = drow.as_dict(m)
        for key in ("recipients", "sent", "delivered", "complaints", "open_rate", "click_rate"):
            yield ("domain", drow.label, drow.kind, key, dd[key])
        yield ("domain", drow.label, drow.kind, "bounced_hard", drow.bounced_hard)
        yield ("domain", drow.label, drow.kind, "bounced_soft", drow.bounced_soft)
        yield ("domain", drow.label, drow.kind, "domains", drow.domains)
        for metric, n in _tally("opens_unique", drow.engagement.opens_unique, m):
            yield ("domain", drow.label, drow.kind, metric, n)
        for metric, n in _tally("clicks_unique", drow.engagement.clicks_unique, m):
            yield ("domain", drow.label, drow.kind, metric, n)
    for lrow in links.rows:
        for metric, n in _tally("clicks_unique", lrow.clicks_unique, m):
            yield ("link", lrow.index, lrow.url, metric, n)
        for metric, n in _tally("clicks_total", lrow.clicks_total, m):
            yield ("link", lrow.index, lrow.url, metric, n)
    c = report.clauses
    if c.available:
        yield (
            "clauses",
            "",
            c.rule,
            "evaluated_at",
            c.evaluated_at.isoformat() if c.evaluated_at else None,
        )
    else:
        yield ("clauses", "", "", "unavailable", c.reason)
    for crow in c.rows:
        cd = crow.as_dict(m)
        for key in ("recipients", "sent", "delivered", "open_rate", "click_rate"):
            yield ("clause", crow.index, crow.clause, key, cd[key])
        for metric, n in _tally("opens_unique", crow.engagement.opens_unique, m):
            yield ("clause", crow.index, crow.clause, metric, n)
        for metric, n in _tally("clicks_unique", crow.engagement.clicks_unique, m):
            yield ("clause", crow.index, crow.clause, metric, n)
    time = report.time
    for section, buckets, label in (
        ("hour", time.hours, lambda b: b.start.strftime("%Y-%m-%dT%H:00Z")),
        ("day", time.by_day, lambda b: b.start.date().isoformat()),
        ("hour_of_day", time.by_hour_of_day, lambda b: f"{b.start.hour:02d}"),
    ):
        for b in buckets:
            item = label(b)
            for metric, n in _tally("opens", b.opens, m):
                yield (section, item, "", metric, n)
            for metric, n in _tally("clicks", b.clicks, m):
                yield (section, item, "", metric, n)


def to_csv(report: CampaignReport) -> bytes:
    """UTF-8 with a header line, CRLF line ends (RFC 4180), every cell neutralised."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(HEADER)
    for row in rows(report):
        writer.writerow([neutralise(cell) for cell in row])
    return buffer.getvalue().encode()


def read_back(data: bytes) -> list[dict[str, Any]]:
    """The rows of a file `to_csv` wrote, as dicts (for tests and scripts)."""
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))
