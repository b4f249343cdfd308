"""The CSV export (every dangerous cell neutralised, read back with the csv module) and
the SVG chart (parses as XML, has the series and points, escapes hostile text)."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET

import pytest
from sample_report import HOSTILE_DOMAIN, HOSTILE_REASON, HOSTILE_URLS, sample

from carepost.reports import chart, csv_export
from carepost.reports.csv_export import DANGEROUS_FIRST, neutralise
from carepost.reports.splits import time_split

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("first", ["=", "+", "-", "@", "\t", "\r", "\0", "＝", "＠"])
def test_a_cell_that_starts_dangerously_gets_a_quote(first: str) -> None:
    assert neutralise(first + "1+1") == "'" + first + "1+1"


@pytest.mark.parametrize("value", ["https://a.example", "a=b", "12", 0.25, 7, None, ""])
def test_other_cells_are_left_alone(value: str | int | float | None) -> None:
    assert neutralise(value) == ("" if value is None else str(value))


def test_the_file_has_no_live_formula_and_keeps_every_value() -> None:
    data = csv_export.to_csv(sample())
    parsed = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert parsed[0] == list(csv_export.HEADER)
    for row in parsed[1:]:
        assert len(row) == 5
        for cell in row:
            assert not cell or cell[0] not in DANGEROUS_FIRST, row
    details = {row[2] for row in parsed if row[0] == "link"}
    for url in HOSTILE_URLS:
        assert neutralise(url) in details  # written whole, quote and all
    items = {row[1] for row in parsed}
    assert "'" + HOSTILE_DOMAIN in items
    assert "'" + HOSTILE_REASON in items
    assert "'+small.example" not in items  # a pooled domain is never named
    failed = [row for row in parsed if row[0] == "failed_reason"]
    assert failed == [["failed_reason", "'@evil", "", "messages", "1"]]


def test_the_file_carries_the_numbers() -> None:
    report = sample()
    rows = csv_export.read_back(csv_export.to_csv(report))
    value = {(r["section"], r["item"], r["metric"]): r["value"] for r in rows}
    assert value[("delivery", "", "recipients")] == "23"
    assert value[("delivery", "", "delivered")] == "19"
    assert value[("engagement", "headline", "opens_unique")] == "5"
    assert value[("engagement", "machine", "opens_unique")] == "7"
    assert value[("engagement", "headline", "open_rate")] == str(round(5 / 19, 4))
    assert value[("engagement", "honeypot", "hits_total")] == str(report.links.honeypot_total)
    assert value[("day", "2026-03-02", "opens_machine")] == "5"
    assert value[("hour_of_day", "09", "opens_human")] == "3"
    assert value[("clause", "1", "recipients")] == "18"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg.encode())  # noqa: S314 (our own output, in a test)


def test_the_chart_is_xml_with_human_and_machine_series() -> None:
    report = sample()
    svg = chart.render(
        "Opens and clicks: " + report.campaign.name, report.time.step, report.time.timeline
    )
    root = _parse(svg)
    assert root.tag == SVG + "svg"
    series = {g.get("data-series"): g for g in root.iter(SVG + "g") if g.get("class") == "series"}
    assert set(series) == {"opens-human", "opens-machine", "clicks-human", "clicks-machine"}
    points = len(report.time.timeline)
    assert points == 24  # 09:00 one day to 08:00 the next
    for g in series.values():
        assert len(g.findall(SVG + "circle")) == points
        assert len(g.findall(SVG + "polyline")) == 1
    values = [
        int(c.get("data-value", "-1")) for c in series["opens-machine"].findall(SVG + "circle")
    ]
    assert values[0] == 5
    assert sum(values) == 5
    human = [int(c.get("data-value", "-1")) for c in series["opens-human"].findall(SVG + "circle")]
    assert sum(human) == 4
    texts = [t.text or "" for t in root.iter(SVG + "text")]
    assert any("Time (UTC" in t for t in texts)
    assert any(t.startswith("Events per hour") for t in texts)
    legend = [t for t in root.iter(SVG + "text") if t.get("data-series")]
    assert {t.get("data-series") for t in legend} == set(series)
    # the hostile name is text, not markup: no <b> element, the control character gone
    title = root.find(SVG + "title")
    assert title is not None
    assert title.text == 'Opens and clicks: Spring <b>&</b> "flu" \ufffd campaign'
    assert not list(root.iter(SVG + "b"))
    assert "<b>" not in svg


def test_unknown_verdict_series_only_when_present_and_an_empty_chart() -> None:
    split = time_split([("2026-03-02 09", "open", "unknown", 2)])
    root = _parse(chart.render("t", split.step, split.timeline))
    keys = {g.get("data-series") for g in root.iter(SVG + "g") if g.get("class") == "series"}
    assert "opens-unknown" in keys
    assert "clicks-unknown" not in keys
    empty = _parse(chart.render("nothing yet", "hour", ()))
    assert any((t.text or "") == "No opens or clicks recorded" for t in empty.iter(SVG + "text"))


def test_nice_ceiling() -> None:
    assert [chart.nice_ceiling(v) for v in (0, 1, 3, 7, 10, 11, 230, 5001)] == [
        1,
        1,
        5,
        10,
        10,
        20,
        500,
        10000,
    ]
