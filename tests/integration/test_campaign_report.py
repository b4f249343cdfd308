"""The campaign report over a real campaign (tests/report_support.py: real services, the
real worker against the SMTP sink, real DSN and ARF messages through the inbound
service, opt-outs through the consent service, events through record_tracked), on every
database. Expected numbers are computed from the scenario's table, not from the code."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from carepost.account.settings import do_set_setting
from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry
from carepost.bounces.stats import campaign_counts
from carepost.db import transaction
from carepost.reports import service
from carepost.reports.campaign import CampaignReport
from carepost.reports.splits import POOLED, UNRECORDED
from carepost.segments import evaluator
from carepost.segments.parser import parse
from carepost.segments.snapshot import build_snapshot
from carepost.workspace import Workspace
from report_support import CLAUSES, HONEYPOT, LINKS, PEOPLE, Person, World, build_world

SENT = [
    p
    for p in PEOPLE
    if p.consent == "full"
    and not p.staff_opt_out_before_retry
    and not p.email.startswith(("rcpt-550", "data-"))
]
UNDELIVERED = [p for p in SENT if p.report in ("hard", "soft")]
DELIVERED = [p for p in SENT if p not in UNDELIVERED]


def _emails(people: list[Person]) -> set[str]:
    return {p.email for p in people}


def _opened(verdicts: set[str], people: tuple[Person, ...] = PEOPLE) -> set[str]:
    """People with an open or a click on a real link by one of these verdicts."""
    return {
        p.email
        for p in people
        for ev in p.events
        if ev.verdict in verdicts and (ev.kind == "open" or ev.link in range(len(LINKS)))
    }


def _clicked(verdicts: set[str], people: tuple[Person, ...] = PEOPLE) -> set[str]:
    return {
        p.email
        for p in people
        for ev in p.events
        if ev.verdict in verdicts and ev.kind == "click" and ev.link in range(len(LINKS))
    }


def _events(kind: str, verdict: str) -> int:
    return sum(
        1
        for p in PEOPLE
        for ev in p.events
        if ev.kind == kind
        and ev.verdict == verdict
        and (kind == "open" or ev.link in range(len(LINKS)))
    )


@pytest.fixture
def world(workspace: Workspace, actor: Actor, smtp_sink_factory: Any) -> World:
    return build_world(workspace, actor, smtp_sink_factory())


def _report(ws: Workspace, actor: Actor, ref: str, **options: Any) -> CampaignReport:
    return service.campaign_report(
        ws.engine, ws.keyring, ref, options=service.Options(**options), actor=actor
    )


def test_every_number_of_the_campaign(workspace: Workspace, actor: Actor, world: World) -> None:
    report = _report(workspace, actor, world.campaign_id, min_domain_recipients=3)
    d = report.as_dict()
    delivery = d["delivery"]

    assert delivery["recipients"] == len(PEOPLE)
    assert delivery["sent"] == len(SENT)
    assert delivery["delivered"] == len(DELIVERED)
    assert delivery["denied"] == 3  # no consent, opt-in only, opted out before the retry
    assert delivery["denied_by_reason"] == {"no_authorization": 2, "no_opt_in": 1, "opted_out": 1}
    assert delivery["deferred"] == 1
    assert delivery["failed"] == 2
    assert delivery["failed_by_reason"] == {"reply_5xx": 2}
    assert (delivery["pending"], delivery["unknown"]) == (0, 0)
    # hard: a4 (DSN) and rcpt-550 (live); soft: a6 (DSN) and data-552 (live)
    assert delivery["bounced"] == {"hard": 2, "soft": 2}
    assert delivery["complaints"] == 1  # the auth-failure report is not a person's
    # a3 (unsubscribe link) and a7 (unsubscribe all); not a8 (import; link after 30 days),
    # not a9 (a later campaign reached them first), not data-451.d (never sent to)
    assert delivery["unsubscribes"] == 2
    assert delivery["unsubscribes_by_source"] == {"unsubscribe_all": 1, "unsubscribe_link": 1}
    assert delivery["rates"]["delivery_rate"] == round(len(DELIVERED) / len(SENT), 4)
    with transaction(workspace.engine) as s:
        counts = campaign_counts(s, world.campaign_id)
    assert (counts.sent, counts.hard, counts.soft, counts.complaints) == (
        delivery["sent"],
        delivery["bounced"]["hard"],
        delivery["bounced"]["soft"],
        delivery["complaints"],
    )

    e = d["engagement"]
    human, machine, unknown = _opened({"human"}), _opened({"machine"}), _opened({"unknown"})
    assert e["opens_unique"] == {
        "human": len(human),
        "machine": len(machine),
        "unknown": len(unknown),
        "headline": len(human | unknown),  # the default leaves machine events out
    }
    assert e["opens_total"] == {
        "human": _events("open", "human"),
        "machine": _events("open", "machine"),
        "unknown": _events("open", "unknown"),
        "headline": _events("open", "human") + _events("open", "unknown"),
    }
    clicked_h, clicked_m = _clicked({"human"}), _clicked({"machine"})
    assert e["clicks_unique"] == {
        "human": len(clicked_h),
        "machine": len(clicked_m),
        "unknown": 0,
        "headline": len(clicked_h),
    }
    assert e["clicks_total"]["human"] == _events("click", "human") == 1
    assert e["clicks_total"]["machine"] == _events("click", "machine") == 2
    delivered = len(DELIVERED)
    assert e["rates"]["headline"] == {
        "open_rate": round(len(human | unknown) / delivered, 4),
        "click_rate": round(len(clicked_h) / delivered, 4),
        "click_to_open_rate": round(len(clicked_h) / len(human | unknown), 4),
    }
    assert e["rates"]["human"]["open_rate"] == round(len(human) / delivered, 4)
    assert e["honeypot_hits"] == {"total": 2, "unique": 2}
    assert e["clicks_on_unknown_links"] == 1
    assert report.headline_basis == "excluding_machine"
    assert d["setting_exclude_machine_events"] is True


def test_splits_by_domain_link_clause_and_time(
    workspace: Workspace, actor: Actor, world: World
) -> None:
    report = _report(workspace, actor, world.campaign_id, min_domain_recipients=3)
    d = report.as_dict()["splits"]

    rows = {r["domain"]: r for r in d["domains"]["rows"]}
    assert list(rows) == ["big.example", POOLED, UNRECORDED]
    big = [p for p in PEOPLE if p.email.endswith("@big.example") and p.consent == "full"]
    assert rows["big.example"]["recipients"] == len(big)
    assert rows["big.example"]["sent"] == len([p for p in big if p in SENT])
    assert rows["big.example"]["delivered"] == len([p for p in big if p in DELIVERED])
    assert rows["big.example"]["bounced"] == {"hard": 2, "soft": 1}
    assert rows["big.example"]["complaints"] == 1
    big_emails = _emails(big)
    assert rows["big.example"]["opens_unique"]["human"] == len(_opened({"human"}) & big_emails)
    assert rows["big.example"]["opens_unique"]["machine"] == len(_opened({"machine"}) & big_emails)
    # small-practice (2), tiny (1) and other (1) have fewer than 3 recipients: pooled,
    # and the pooled row never names them
    pooled = rows[POOLED]
    assert (pooled["domains"], pooled["recipients"], pooled["sent"]) == (3, 4, 1)
    assert pooled["bounced"] == {"hard": 0, "soft": 1}
    assert pooled["opens_unique"] == {"human": 0, "machine": 0, "unknown": 1, "headline": 1}
    assert "small-practice" not in str(d["domains"])
    assert "tiny.example" not in str(d["domains"])
    # never attempted: the two denied at the first run
    assert (rows[UNRECORDED]["recipients"], rows[UNRECORDED]["sent"]) == (2, 0)
    shown = _report(workspace, actor, world.campaign_id, min_domain_recipients=1, clauses=False)
    labels = [r.label for r in shown.domains.rows]
    assert labels[:1] == ["big.example"]
    assert set(labels[1:4]) == {
        "small-practice.example",
        "tiny.example",
        "other.example",
    }

    links = d["links"]
    assert [(r["index"], r["url"]) for r in links["rows"]] == list(enumerate(LINKS))
    assert links["rows"][0]["clicks_unique"]["human"] == 1
    assert links["rows"][0]["clicks_unique"]["machine"] == 1
    assert links["rows"][1]["clicks_total"] == {
        "human": 0,
        "machine": 1,
        "unknown": 0,
        "headline": 0,
    }
    assert links["honeypot_hits"] == {"total": 2, "unique": 2}
    assert HONEYPOT not in [r["index"] for r in links["rows"]]

    clauses = d["clauses"]
    assert clauses["available"] is True
    assert clauses["rule"] == 'state == "MA" or age >= 65'
    assert [r["clause"] for r in clauses["rows"]] == list(CLAUSES)
    members = {
        CLAUSES[0]: {p.email for p in PEOPLE if p.state == "MA"},
        CLAUSES[1]: {p.email for p in PEOPLE if p.born <= 1955},
    }
    for row in clauses["rows"]:
        group = members[row["clause"]]
        assert row["recipients"] == len(group)
        assert row["sent"] == len(group & _emails(SENT))
        assert row["delivered"] == len(group & _emails(DELIVERED))
        assert row["opens_unique"]["human"] == len(group & _opened({"human"}))
        assert row["opens_unique"]["machine"] == len(group & _opened({"machine"}))
        assert row["opens_unique"]["headline"] == len(group & _opened({"human", "unknown"}))
        assert row["clicks_unique"]["machine"] == len(group & _clicked({"machine"}))

    t0 = world.t0
    hours: dict[str, dict[str, int]] = {}
    for p in PEOPLE:
        for ev in p.events:
            if ev.kind == "click" and ev.link not in range(len(LINKS)):
                continue
            at = (t0 + timedelta(minutes=ev.minutes)).replace(minute=0, second=0)
            key = f"{ev.kind}s_{ev.verdict}"
            hours.setdefault(at.date().isoformat(), {}).setdefault(key, 0)
            hours[at.date().isoformat()][key] += 1
    by_day = {b["day"]: b for b in d["time"]["by_day"]}
    assert set(by_day) == set(hours)
    for day, want in hours.items():
        got = by_day[day]
        assert got["opens"]["human"] == want.get("opens_human", 0)
        assert got["opens"]["machine"] == want.get("opens_machine", 0)
        assert got["clicks"]["machine"] == want.get("clicks_machine", 0)
    timeline = d["time"]["timeline"]
    assert timeline["step"] == "hour"  # the events span 26 hours
    first = (t0 + timedelta(minutes=1)).replace(minute=0, second=0)
    last = (t0 + timedelta(minutes=26 * 60)).replace(minute=0, second=0)
    assert len(timeline["points"]) == int((last - first).total_seconds() // 3600) + 1
    assert sum(p["opens"]["human"] for p in timeline["points"]) == _events("open", "human")
    assert sum(b["clicks"]["human"] for b in d["time"]["by_hour_of_day"]) == 1


def test_clause_split_equals_the_full_snapshot(
    workspace: Workspace, actor: Actor, world: World
) -> None:
    """The recipients-only snapshot answers each clause as the full snapshot does."""
    report = _report(workspace, actor, world.campaign_id)
    full = build_snapshot(workspace.engine, workspace.keyring, actor=actor)
    recipients = set(world.contact_of.values())
    at = report.clauses.evaluated_at
    assert at is not None
    for row in report.clauses.rows:
        mask = evaluator.evaluate(parse(row.clause), full, at)
        ids = {full.ids[i] for i in np.flatnonzero(mask)}
        assert row.recipients == len(ids & recipients)


def test_machine_events_by_setting_and_by_option(
    workspace: Workspace, actor: Actor, world: World
) -> None:
    everyone = _opened({"human", "machine", "unknown"})
    clicked = _clicked({"human", "machine"})
    forced = _report(workspace, actor, world.campaign_id, include_machine=True, clauses=False)
    assert forced.headline_basis == "including_machine"
    assert forced.setting_excludes_machine is True
    e = forced.as_dict()["engagement"]
    assert e["opens_unique"]["headline"] == len(everyone)
    assert e["clicks_unique"]["headline"] == len(clicked)
    assert e["rates"]["headline"]["click_to_open_rate"] == round(len(clicked) / len(everyone), 4)
    # human and machine are shown apart whatever the headline is
    assert e["opens_unique"]["human"] == len(_opened({"human"}))

    with transaction(workspace.engine) as s:
        do_set_setting(s, "tracking.exclude_machine_events", "false", actor=actor)
    by_setting = _report(workspace, actor, world.campaign_id, clauses=False)
    assert by_setting.headline_basis == "including_machine"
    assert by_setting.setting_excludes_machine is False
    assert by_setting.as_dict()["engagement"]["opens_unique"]["headline"] == len(everyone)


def test_a_later_campaign_gets_the_opt_out_and_has_no_clause_split(
    workspace: Workspace, actor: Actor, world: World
) -> None:
    report = _report(workspace, actor, "Flu 2026 reminder")
    assert report.campaign.id == world.second_campaign_id
    assert report.delivery.recipients == report.delivery.sent == 1
    assert report.delivery.unsubscribes_by_source == {"form": 1}
    assert report.clauses.available is False
    assert "frozen segment membership" in report.clauses.reason


def test_reading_is_audited_and_the_clause_split_names_the_recipients(
    workspace: Workspace, actor: Actor, world: World
) -> None:
    report = _report(workspace, actor, world.campaign_id)
    with transaction(workspace.engine) as s:
        service.do_record_view(s, report, actor=actor, exports=["csv"])
    with transaction(workspace.engine) as s:
        viewed = s.scalars(select(AuditEntry).where(AuditEntry.action == service.VIEWED)).all()
        access = s.scalars(
            select(AuditEntry).where(AuditEntry.action == service.CLAUSES_ACCESS)
        ).all()
        named = [e.action for e in audit.entries_for_subject(s, world.contact_of["a0@big.example"])]
    assert len(viewed) == 1
    assert world.campaign_id in viewed[0].subjects
    assert '"exports":["csv"]' in viewed[0].details
    assert len(access) == 1
    assert access[0].purpose.startswith("campaign report")
    assert service.CLAUSES_ACCESS in named
    assert audit.verify(workspace.engine).ok


def test_unknown_and_ambiguous_campaigns_are_clear_errors(
    workspace: Workspace, actor: Actor, world: World
) -> None:
    with pytest.raises(service.ReportError, match="no campaign with id or name 'nope'"):
        _report(workspace, actor, "nope")
    from carepost.campaigns import service as campaigns
    from carepost.campaigns.models import Campaign

    with transaction(workspace.engine) as s:
        first = s.get(Campaign, world.campaign_id)
        assert first is not None
        campaigns.create_campaign(
            s,
            name="Flu 2026",
            segment="flu-audience",
            template_id=first.template_id,
            sender_id=first.sender_id,
            topic="flu",
            actor=actor,
        )
    with pytest.raises(service.ReportError, match="2 campaigns are named 'Flu 2026'"):
        _report(workspace, actor, "Flu 2026")
    assert _report(workspace, actor, world.campaign_id, clauses=False).campaign.name == "Flu 2026"
