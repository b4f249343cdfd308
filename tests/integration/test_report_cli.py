"""`carepost report campaign` as a user runs it (a real process) over the campaign of
tests/report_support.py, on every database: JSON, tables, the CSV export and the chart,
and bad input (exit code 2, a clear message, nothing half-written, nothing audited)."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry
from carepost.campaigns import service as campaigns
from carepost.campaigns.models import Campaign
from carepost.db import transaction
from carepost.reports.csv_export import DANGEROUS_FIRST, HEADER
from carepost.reports.service import VIEWED
from carepost.workspace import Workspace
from cli_runner import CarepostCli
from report_support import PEOPLE, World, build_world

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def world(workspace: Workspace, actor: Actor, smtp_sink_factory: Any) -> World:
    return build_world(workspace, actor, smtp_sink_factory())


def _said(run: Any) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(run.stderr.split())


def _views(ws: Workspace) -> int:
    with transaction(ws.engine) as s:
        return int(
            s.scalar(
                select(func.count()).select_from(AuditEntry).where(AuditEntry.action == VIEWED)
            )
            or 0
        )


def test_json_tables_csv_and_chart(
    workspace: Workspace, world: World, carepost: CarepostCli, tmp_path: Path
) -> None:
    run = carepost(
        "report", "campaign", world.campaign_id, "--json", "--min-domain-recipients", "3"
    )
    report = json.loads(run.stdout)
    assert report["report"] == "campaign"
    assert report["campaign"]["id"] == world.campaign_id
    assert report["delivery"]["recipients"] == len(PEOPLE)
    assert report["headline_basis"] == "excluding_machine"
    assert set(report["splits"]) == {"domains", "links", "clauses", "time"}
    assert report["splits"]["domains"]["min_recipients"] == 3
    assert report["splits"]["clauses"]["available"] is True

    forced = json.loads(
        carepost(
            "report", "campaign", world.campaign_id, "--json", "--include-machine", "--no-clauses"
        ).stdout
    )
    assert forced["headline_basis"] == "including_machine"
    assert (
        forced["engagement"]["opens_unique"]["headline"]
        > report["engagement"]["opens_unique"]["headline"]
    )
    assert forced["splits"]["clauses"]["available"] is False

    out = tmp_path / "exports"
    out.mkdir()
    run = carepost(
        "report",
        "campaign",
        "Flu 2026",  # by its name
        "--csv",
        str(out / "flu.csv"),
        "--chart",
        str(out / "flu.svg"),
    )
    assert "Campaign Flu 2026" in run.stdout
    assert "Opens and clicks" in run.stdout
    assert "By segment clause" in run.stdout
    rows = list(csv.reader(io.StringIO((out / "flu.csv").read_text(), newline="")))
    assert rows[0] == list(HEADER)
    assert ["delivery", "", "", "recipients", str(len(PEOPLE))] in rows
    root = ET.fromstring((out / "flu.svg").read_bytes())  # noqa: S314 (our own output)
    series = {g.get("data-series") for g in root.iter(SVG + "g") if g.get("class") == "series"}
    assert {"opens-human", "opens-machine", "clicks-human", "clicks-machine"} <= series
    assert sorted(p.name for p in out.iterdir()) == ["flu.csv", "flu.svg"]  # no temp files
    assert (out / "flu.csv").stat().st_mode & 0o077 == 0
    assert _views(workspace) == 3


def test_a_hostile_campaign_name_is_neutralised_in_the_csv(
    workspace: Workspace, actor: Actor, world: World, carepost: CarepostCli, tmp_path: Path
) -> None:
    with transaction(workspace.engine) as s:
        first = s.get(Campaign, world.campaign_id)
        assert first is not None
        hostile = campaigns.create_campaign(
            s,
            name='=HYPERLINK("http://evil.example","x")',
            segment="flu-audience",
            template_id=first.template_id,
            sender_id=first.sender_id,
            topic="flu",
            actor=actor,
        )
    target = tmp_path / "h.csv"
    carepost("report", "campaign", hostile.id, "--csv", str(target), "--json")
    rows = list(csv.reader(io.StringIO(target.read_text(), newline="")))
    assert ["campaign", "", "", "name", "'" + hostile.name] in rows
    assert all(not cell or cell[0] not in DANGEROUS_FIRST for row in rows for cell in row)


def test_bad_input_is_exit_2_with_nothing_written(
    workspace: Workspace, world: World, carepost: CarepostCli, tmp_path: Path
) -> None:
    before = _views(workspace)
    exports = tmp_path / "exports"
    exports.mkdir()

    run = carepost("report", "campaign", "no-such-campaign", check=False)
    assert run.returncode == 2
    assert "no campaign with id or name 'no-such-campaign'" in _said(run)

    missing = tmp_path / "missing" / "chart.svg"
    run = carepost("report", "campaign", world.campaign_id, "--chart", str(missing), check=False)
    assert run.returncode == 2
    assert "--chart: the folder" in _said(run)
    assert "does not exist" in _said(run)
    assert not missing.parent.exists()

    png = exports / "chart.png"
    csv_file = exports / "report.csv"
    run = carepost(
        "report",
        "campaign",
        world.campaign_id,
        "--csv",
        str(csv_file),
        "--chart",
        str(png),
        check=False,
    )
    assert run.returncode == 2
    assert "PNG is not supported; SVG is" in _said(run)
    assert not png.exists()
    assert not csv_file.exists()  # checked before any work: the CSV is not written either

    run = carepost(
        "report", "campaign", world.campaign_id, "--csv", str(exports / "r.txt"), check=False
    )
    assert run.returncode == 2
    assert "--csv: the file name must end in .csv" in _said(run)

    run = carepost(
        "report", "campaign", world.campaign_id, "--min-domain-recipients", "0", check=False
    )
    assert run.returncode == 2
    assert list(exports.iterdir()) == []
    assert _views(workspace) == before
