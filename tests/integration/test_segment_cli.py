"""`carepost demo-data` and `carepost segment ...` as a user runs them: real processes."""

from __future__ import annotations

import json

import orjson
from sqlalchemy import select
from test_cli import cli  # noqa: F401 (fixture)

from carepost.audit.models import AuditEntry
from carepost.config import Settings
from carepost.db import make_engine, read_only


def _audit(settings: Settings, action: str) -> list[tuple[str, str, str]]:
    engine = make_engine(settings.resolved_database_url)
    try:
        with read_only(engine) as conn:
            return [
                (r.subjects, r.purpose, r.details)
                for r in conn.execute(select(AuditEntry).where(AuditEntry.action == action))
            ]
    finally:
        engine.dispose()


def test_segment_commands_end_to_end(cli, settings: Settings) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    cli("init")
    gen = json.loads(
        cli(
            "demo-data", "--contacts", "300", "--seed", "9", "--as-of", "2026-11-24", "--json"
        ).stdout
    )
    assert gen["contacts"]["created"] == 300
    assert gen["events"] > 0
    again = json.loads(
        cli(
            "demo-data", "--contacts", "300", "--seed", "9", "--as-of", "2026-11-24", "--json"
        ).stdout
    )
    assert again["contacts"]["unchanged"] == 300
    assert again["events"] == 0

    rule = 'age >= 40 and has_condition("hypertension")'
    counted = json.loads(
        cli("segment", "count", rule, "--at", "2026-11-24T12:00:00Z", "--json").stdout
    )
    assert counted["contacts"] == 300
    assert 0 < counted["count"] < 300
    everyone = json.loads(
        cli(
            "segment", "count", "age >= 0 or not age >= 0", "--at", "2026-11-24T12:00:00Z", "--json"
        ).stdout
    )
    assert everyone["count"] == 300
    assert everyone["rule"] == "age >= 0 or not age >= 0"

    bad = cli("segment", "count", "agee >= 40", "--json", check=False)
    assert bad.returncode == 2
    err = json.loads(bad.stdout)["error"]
    assert (err["line"], err["column"], err["suggestion"]) == (1, 1, "age")
    human = cli("segment", "count", 'stage == "activ"', check=False)
    assert human.returncode == 2
    assert "line 1, column 1" in human.stderr
    assert "'active'" in human.stderr

    saved = json.loads(cli("segment", "save", "hyper40", rule, "--json").stdout)
    assert saved["version"] == 1
    assert saved["changed"] is True
    cli("segment", "save", "hyper40_opened", 'in_segment("hyper40") and opened(within=180d)')
    cycle = cli("segment", "save", "hyper40", 'in_segment("hyper40_opened")', check=False)
    assert cycle.returncode == 2
    assert "cycle" in cycle.stderr
    listed = json.loads(cli("segment", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["hyper40", "hyper40_opened"]
    assert listed[0]["rule"] == rule

    no_purpose = cli("segment", "preview", "hyper40", "--limit", "2", check=False)
    assert no_purpose.returncode == 2
    assert "--purpose" in no_purpose.stderr
    preview = json.loads(
        cli(
            "segment",
            "preview",
            "hyper40",
            "--limit",
            "2",
            "--purpose",
            "check the list",
            "--at",
            "2026-11-24T12:00:00Z",
            "--json",
        ).stdout
    )
    assert preview["members"] == counted["count"]
    assert len(preview["shown"]) == 2
    assert all(v["record"]["emails"][0].endswith("@example.org") for v in preview["shown"])
    audited = _audit(settings, "segments.preview")
    assert len(audited) == 1
    assert orjson.loads(audited[0][0]) == [v["id"] for v in preview["shown"]]
    assert audited[0][1] == "check the list"

    member = preview["shown"][0]["id"]
    why = json.loads(
        cli(
            "segment",
            "explain",
            "hyper40",
            "--contact",
            member,
            "--at",
            "2026-11-24T12:00:00Z",
            "--json",
        ).stdout
    )
    assert why["member"] is True
    assert why["failed"] == []
    contacts = json.loads(cli("contacts", "list", "--limit", "300", "--json").stdout)
    counts = {}
    for c in contacts:
        out = json.loads(
            cli(
                "segment",
                "explain",
                "hyper40",
                "--contact",
                c["id"],
                "--at",
                "2026-11-24T12:00:00Z",
                "--json",
            ).stdout
        )
        if not out["member"]:
            assert out["failed"]
            assert set(out["failed"]) <= {
                "age >= 40",
                'has_condition("hypertension")',
            }
            counts[c["id"]] = out["failed"]
            break
    assert counts
    frozen = json.loads(
        cli(
            "segment",
            "freeze",
            "hyper40",
            "--campaign",
            "flu-2026",
            "--at",
            "2026-11-24T12:00:00Z",
            "--json",
        ).stdout
    )
    assert frozen["members"] == counted["count"]
    assert frozen["version"] == 1
    # Building a snapshot is one audit entry per command, never one per contact.
    assert len(_audit(settings, "segments.snapshot_built")) == 6
    assert not _audit(settings, "contacts.phi_read")
