"""Account-wide settings: defaults, audited changes, bad input refused without a write."""

from __future__ import annotations

import orjson
from sqlalchemy import select

from carepost.account import settings as account
from carepost.audit.models import AuditEntry
from carepost.db import transaction
from carepost.workspace import Workspace
from cli_runner import CarepostCli


def test_machine_events_are_left_out_by_default_and_the_change_is_audited(
    workspace: Workspace, carepost: CarepostCli
) -> None:
    shown = orjson.loads(carepost("settings", "show", "--json").stdout)
    assert shown == {
        "tracking.exclude_machine_events": True,
        "journeys.marketing_per_week": 3,
        "journeys.default_time_zone": "UTC",
    }

    carepost("settings", "set", "tracking.exclude_machine_events", "off")
    with transaction(workspace.engine) as session:
        assert account.get_bool(session, account.EXCLUDE_MACHINE_EVENTS) is False
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "account.setting_changed")
        ).one()
        details = orjson.loads(entry.details)
    assert details == {"key": "tracking.exclude_machine_events", "from": True, "to": False}
    assert entry.actor == "cli:test-user"


def test_unknown_setting_and_bad_value_are_refused_and_nothing_is_written(
    workspace: Workspace, carepost: CarepostCli
) -> None:
    unknown = carepost("settings", "set", "tracking.nope", "true", check=False)
    assert unknown.returncode == 2
    assert "unknown setting 'tracking.nope'" in " ".join(unknown.stderr.split())
    bad = carepost("settings", "set", "tracking.exclude_machine_events", "maybe", check=False)
    assert bad.returncode == 2
    assert "takes true or false, not 'maybe'" in " ".join(bad.stderr.split())
    with transaction(workspace.engine) as session:
        assert (
            session.scalars(
                select(AuditEntry).where(AuditEntry.action == "account.setting_changed")
            ).all()
            == []
        )
        assert account.all_values(session) == {
            "tracking.exclude_machine_events": True,
            "journeys.marketing_per_week": 3,
            "journeys.default_time_zone": "UTC",
        }


def test_default_time_zone_is_an_iana_name(workspace: Workspace, carepost: CarepostCli) -> None:
    bad = carepost("settings", "set", "journeys.default_time_zone", "Mars/Olympus", check=False)
    assert bad.returncode == 2
    assert "an IANA time zone name" in " ".join(bad.stderr.split())
    carepost("settings", "set", "journeys.default_time_zone", "America/New_York")
    with transaction(workspace.engine) as session:
        assert account.get_str(session, account.DEFAULT_TIME_ZONE) == "America/New_York"
