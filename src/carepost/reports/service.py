"""Building a campaign report: the queries in one consistent read, the segment clause
split over a snapshot of the recipients (decrypted through the audited door), the pure
assembly, and the audit entry that says who looked. Services never commit: the caller
owns the transaction of `do_record_view`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from carepost.account.settings import EXCLUDE_MACHINE_EVENTS, get_bool
from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.crypto.keyring import KeyRing
from carepost.reports import queries
from carepost.reports.campaign import CampaignReport, build_report, summarize_bounces
from carepost.reports.measures import NONE
from carepost.reports.splits import (
    DEFAULT_MIN_DOMAIN_RECIPIENTS,
    ClauseSplit,
    Recipients,
    clause_rows,
    link_split,
    time_split,
)
from carepost.segments import ast as A
from carepost.segments import evaluator
from carepost.segments.ast import RuleError
from carepost.segments.parser import parse
from carepost.segments.printer import print_rule
from carepost.segments.service import definitions
from carepost.segments.snapshot import build_snapshot_of
from carepost.staff.principal import Principal
from carepost.tracking.destinations import links_of

VIEWED = "reports.campaign_viewed"
CLAUSES_ACCESS = "reports.segment_clauses_evaluated"


class ReportError(ValueError):
    """Bad input (an unknown campaign, an ambiguous name): the message says which."""


@dataclass(frozen=True)
class Options:
    include_machine: bool = False  # override the account setting for this report
    min_domain_recipients: int = DEFAULT_MIN_DOMAIN_RECIPIENTS
    clauses: bool = True  # the segment clause split (decrypts the recipients, audited)


def campaign_report(
    engine: Engine,
    ring: KeyRing,
    ref: str,
    *,
    options: Options = Options(),
    actor: Actor,
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> CampaignReport:
    """The report of the campaign with id (or unique name) `ref`. De-identified
    aggregates: `reports:read` (the clause split decrypts the recipients for the
    process, audited under `actor`, and shows only counts)."""
    if principal is not None:
        principal.require("reports:read")
    if options.min_domain_recipients < 1:
        raise ReportError("the smallest domain shown needs at least 1 recipient")
    with queries.consistent_read(engine) as conn:
        try:
            found = queries.find_campaign(conn, ref)
        except queries.CampaignNotFound as exc:
            raise ReportError(str(exc)) from None
        campaign = found.info
        session = Session(bind=conn)
        defs: dict[str, evaluator.SegmentDef] = {}
        excludes = get_bool(session, EXCLUDE_MACHINE_EVENTS)
        try:
            links = links_of(session, campaign.template_id)
        except KeyError:
            links = ()
        n = len(links)
        bounce_rows = queries.bounce_rows(conn, campaign.id)
        opt_outs = queries.opt_outs(conn, campaign)
        later = queries.later_sends(conn, campaign, [x.contact_id for x in opt_outs])
        states = queries.outbox_states(conn, campaign.id)
        denied = queries.denied_reasons(conn, campaign.id)
        domains = queries.domain_inputs(conn, campaign.id, n)
        # Every message is in one domain row (or the row of none): the rows add up.
        engagement = sum((d.engagement for d in domains), NONE)
        by_link = queries.clicks_by_link(conn, campaign.id)
        hours = queries.hourly(conn, campaign.id, n)
        freeze = queries.freeze_of(conn, found.membership_ref)
        recipients = None
        if options.clauses and freeze is not None:
            undelivered = summarize_bounces(bounce_rows).undelivered
            recipients = queries.recipient_flags(conn, campaign.id, n, undelivered)
            defs = definitions(session)
        session.close()
    if not options.clauses:
        clauses = ClauseSplit(False, "not asked for (--no-clauses)")
    elif freeze is None or recipients is None:
        clauses = ClauseSplit(
            False, "the campaign has no frozen segment membership (not started from a segment)"
        )
    else:
        clauses = _clause_split(
            engine, ring, campaign.id, freeze, recipients, defs, actor=actor, clock=clock
        )
    return build_report(
        campaign=campaign,
        generated_at=clock(),
        include_machine=options.include_machine or not excludes,
        setting_excludes_machine=excludes,
        states=states,
        denied_reasons=denied,
        bounce_rows=bounce_rows,
        opt_outs=opt_outs,
        later_sends=later,
        engagement=engagement,
        domains=domains,
        min_domain_recipients=options.min_domain_recipients,
        links=link_split(links, by_link),
        clauses=clauses,
        time=time_split(hours),
    )


def top_level_clauses(node: A.Node) -> tuple[A.Node, ...]:
    """The children of an `and`/`or` root; otherwise the rule itself."""
    return node.items if isinstance(node, A.And | A.Or) else (node,)


def uses_events(node: A.Node, defs: Mapping[str, evaluator.SegmentDef]) -> bool:
    """Whether evaluating `node` reads engagement events (directly or through a
    referenced segment), so the recipients' events must be loaded."""
    seen: set[str] = set()
    todo = [node]
    while todo:
        for n in A.walk(todo.pop()):
            if isinstance(n, A.Engaged):
                return True
            if isinstance(n, A.InSegment) and n.name not in seen:
                seen.add(n.name)
                ref = defs.get(n.name)
                if ref is not None and not isinstance(ref, frozenset):
                    todo.append(ref)
    return False


def _clause_split(
    engine: Engine,
    ring: KeyRing,
    campaign_id: str,
    freeze: queries.Freeze,
    recipients: Recipients,
    defs: Mapping[str, evaluator.SegmentDef],
    *,
    actor: Actor,
    clock: Clock,
) -> ClauseSplit:
    """Each top-level clause of the frozen rule, evaluated at the freeze's `evaluated_at`
    (the moment the audience was chosen) over a snapshot of the recipients only."""
    try:
        node = parse(freeze.rule_text)
    except RuleError as exc:
        return ClauseSplit(False, f"the frozen rule no longer parses: {exc}")
    clauses = top_level_clauses(node)
    snap = build_snapshot_of(
        engine,
        ring,
        recipients.contact_ids,
        actor=actor,
        purpose=f"campaign report: segment clause split of campaign {campaign_id}",
        action=CLAUSES_ACCESS,
        details={"campaign": campaign_id, "freeze": freeze.id},
        with_events=uses_events(node, defs),
        clock=clock,
    )
    rows = np.fromiter(
        (snap.row_of.get(c, -1) for c in recipients.contact_ids),
        np.int64,
        len(recipients.contact_ids),
    )
    present = rows >= 0
    safe_rows = np.where(present, rows, 0)
    matches = []
    try:
        for clause in clauses:
            mask = evaluator.evaluate(clause, snap, freeze.evaluated_at, segments=defs)
            matches.append(present & mask[safe_rows] if snap.n else np.zeros(len(rows), bool))
    except RuleError as exc:
        return ClauseSplit(False, f"the frozen rule cannot be evaluated now: {exc}")
    return ClauseSplit(
        True,
        segment=freeze.segment,
        version=freeze.version,
        rule=freeze.rule_text,
        evaluated_at=freeze.evaluated_at,
        rows=clause_rows([print_rule(c) for c in clauses], matches, recipients),
    )


def do_record_view(
    session: Session,
    report: CampaignReport,
    *,
    actor: Actor,
    exports: Sequence[str] = (),
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> None:
    """Audit that `actor` read the report (aggregates only; the clause split's
    decryption has its own entry). `exports`: the kinds of file written (csv, svg)."""
    if principal is not None:
        principal.require("reports:read")
    clauses = report.clauses
    audit.append(
        session,
        actor=actor,
        action=VIEWED,
        subjects=[report.campaign.id],
        details={
            "headline_basis": report.headline_basis,
            "clauses": clauses.available,
            "min_domain_recipients": report.domains.min_recipients,
            "exports": sorted(exports),
            "generated_at": report.generated_at.isoformat(),
        },
        clock=clock,
    )
