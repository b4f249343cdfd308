"""A campaign report built by the pure assembly from plain rows, with values chosen by an
attacker where the real data may hold text from outside (link URLs, recipient domains,
reason codes, the rule, the campaign name)."""

from __future__ import annotations

from datetime import UTC, datetime

from carepost.reports.campaign import BounceRow, CampaignInfo, CampaignReport, build_report
from carepost.reports.measures import Engagement, Tally
from carepost.reports.splits import ClauseRow, ClauseSplit, DomainInput, link_split, time_split

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOSTILE_URLS = (
    '=HYPERLINK("http://evil.example","click")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)",
    "\tTAB=1+1",
    "\rCR=1+1",
    "\0NUL=1",
    'https://clinic.example/ok, with "quotes"\nand a newline',
)
HOSTILE_DOMAIN = "=1+1.example"
HOSTILE_REASON = "-reason_code"


def sample(name: str = 'Spring <b>&</b> "flu" \x07 campaign') -> CampaignReport:
    info = CampaignInfo(
        id="c" * 32,
        name=name,
        status="done",
        segment="=seg",
        template_id="t" * 32,
        message_class="marketing",
        channel="email",
        topic="flu",
        created_at=T0,
        started_at=T0,
        finished_at=None,
    )
    clicks = {
        i: Engagement(clicks_total=Tally.of_events(i, 1, 0), clicks_unique=Tally(i, 1, 0, i, i + 1))
        for i in range(len(HOSTILE_URLS) + 1)
    }
    return build_report(
        campaign=info,
        generated_at=T0,
        include_machine=False,
        setting_excludes_machine=True,
        states={("sent", None): 20, ("denied", "gate_denied"): 2, ("failed", "@evil"): 1},
        denied_reasons=[(f"{HOSTILE_REASON} no_opt_in", 2)],
        bounce_rows=[BounceRow("m1", "sent", HOSTILE_DOMAIN, "report", "hard")],
        opt_outs=[],
        later_sends=[],
        engagement=Engagement(
            opens_unique=Tally(5, 7, 0, 5, 10),
            opens_total=Tally.of_events(6, 9, 0),
            clicks_unique=Tally(2, 3, 0, 2, 4),
            clicks_total=Tally.of_events(2, 5, 0),
        ),
        domains=[
            DomainInput(HOSTILE_DOMAIN, 12, 12, Engagement(opens_unique=Tally(3, 1, 0, 3, 4))),
            DomainInput("+small.example", 3, 3),
            DomainInput(None, 2, 0),
        ],
        min_domain_recipients=10,
        links=link_split(HOSTILE_URLS, clicks),
        clauses=ClauseSplit(
            True,
            segment="=seg",
            version=2,
            rule='attr.note == "=1+1" or age >= 65',
            evaluated_at=T0,
            rows=(
                ClauseRow(0, 'attr.note == "=1+1"', 4, 4, 4, Engagement()),
                ClauseRow(1, "age >= 65", 18, 16, 15, Engagement()),
            ),
        ),
        time=time_split(
            [
                ("2026-03-02 09", "open", "human", 3),
                ("2026-03-02 09", "open", "machine", 5),
                ("2026-03-02 11", "click", "human", 2),
                ("2026-03-03 08", "open", "human", 1),
            ]
        ),
    )
