"""The gate against a scenario table derived from the regulation text.

Each case names the rule it tests. Sources: 45 CFR 164.501 (definition of marketing and
its exclusions), 164.508(a)(3) (authorization required for marketing; remuneration
statement), 164.508(b)(5) (revocation), 164.508(c) (core elements and statements),
CAN-SPAM 15 U.S.C. 7704(a)(3)-(4) (opt-out honoured), RFC 8058 (one-click unsubscribe).
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
from consent_builders import AT, DAY, IN, OUT, auth, opt, state, sup

from carepost.consent import gate
from carepost.consent.records import ContactState


class Case(NamedTuple):
    name: str
    state: ContactState
    message_class: str
    allowed: bool
    reasons: tuple[str, ...]
    authorization_id: str | None = None
    channel: str = "email"
    topic: str = "newsletter"
    sender: str = "self"


A = auth()
SMS_IN = {("sms", "newsletter"): (opt("opted_in"),)}

CASES = [
    # --- exempt classes: 164.501 "marketing" (1)(i)-(iii) exclusions; no authorization ---
    # 164.501 marketing (1)(ii): treatment communications need no authorization.
    Case("treatment, no records at all", state(), "treatment", True, (gate.EXEMPT_CLASS,)),
    # 164.501 marketing (1)(iii): health care operations (own products, care coordination).
    Case("operations, no records", state(), "operations", True, (gate.EXEMPT_CLASS,)),
    # CAN-SPAM 7702(17) transactional or relationship messages: no authorization, no opt-in.
    Case("transactional, no records", state(), "transactional", True, (gate.EXEMPT_CLASS,)),
    # Exempt classes never rely on an authorization, even when one exists.
    Case("treatment with auth on file", state(IN, (A,)), "treatment", True, (gate.EXEMPT_CLASS,)),
    # Issue rule: exempt classes honour the channel opt-out for their topic.
    Case("treatment, topic opted out", state(OUT), "treatment", False, (gate.OPTED_OUT_TOPIC,)),
    # Same rule for operations (CAN-SPAM 7704(a)(4) opt-out honoured).
    Case("operations, topic opted out", state(OUT), "operations", False, (gate.OPTED_OUT_TOPIC,)),
    # Same rule for transactional.
    Case("transactional opted out", state(OUT), "transactional", False, (gate.OPTED_OUT_TOPIC,)),
    # Opt-out is per topic: another topic's opt-out does not apply.
    Case(
        "treatment, other topic opted out",
        state({("email", "refill-reminders"): (opt("opted_out"),)}),
        "treatment",
        True,
        (gate.EXEMPT_CLASS,),
    ),
    # Opt-out is per channel: an sms opt-out does not stop email.
    Case(
        "transactional, sms opted out only",
        state({("sms", "newsletter"): (opt("opted_out"),)}),
        "transactional",
        True,
        (gate.EXEMPT_CLASS,),
    ),
    # History: the latest statement at `at` wins (opt-out then opt-in again).
    Case(
        "treatment, opted out then back in",
        state(
            {("email", "newsletter"): (opt("opted_out", AT - 9 * DAY), opt("opted_in", AT - DAY))}
        ),
        "treatment",
        True,
        (gate.EXEMPT_CLASS,),
    ),
    # History: an opt-out recorded after `at` does not apply at `at`.
    Case(
        "treatment, opt-out in the future of at",
        state({("email", "newsletter"): (opt("opted_out", AT + DAY),)}),
        "treatment",
        True,
        (gate.EXEMPT_CLASS,),
    ),
    # --- suppression always wins (CAN-SPAM 7704(a)(4); RFC 8058 section 3) ---------------
    # Suppression beats the exempt class: a hard-bounced address gets nothing.
    Case(
        "treatment, hard bounce",
        state(sups=(sup("hard_bounce"),)),
        "treatment",
        False,
        (gate.SUPPRESSED_HARD_BOUNCE,),
    ),
    # Suppression overriding a valid authorization and an opt-in.
    Case(
        "marketing, authorized but spam complaint",
        state(IN, (A,), (sup("spam_complaint"),)),
        "marketing",
        False,
        (gate.SUPPRESSED_SPAM_COMPLAINT,),
        "auth-1",
    ),
    # Manual suppression beats transactional.
    Case(
        "transactional, manual suppression",
        state(sups=(sup("manual"),)),
        "transactional",
        False,
        (gate.SUPPRESSED_MANUAL,),
    ),
    # Unsubscribe-all is a suppression: it stops every class on the channel.
    Case(
        "operations, unsubscribe-all",
        state(sups=(sup("unsubscribe_all"),)),
        "operations",
        False,
        (gate.SUPPRESSED_UNSUBSCRIBE_ALL,),
    ),
    # Issue: marketing needs "no unsubscribe-all", even with authorization and opt-in.
    Case(
        "marketing, authorized, opted in, unsubscribe-all",
        state(IN, (A,), (sup("unsubscribe_all"),)),
        "marketing",
        False,
        (gate.SUPPRESSED_UNSUBSCRIBE_ALL,),
        "auth-1",
    ),
    # Topic opt-out against unsubscribe-all: both reasons are reported.
    Case(
        "marketing, topic opt-out and unsubscribe-all",
        state(OUT, (A,), (sup("unsubscribe_all"),)),
        "marketing",
        False,
        (gate.SUPPRESSED_UNSUBSCRIBE_ALL, gate.OPTED_OUT_TOPIC),
        "auth-1",
    ),
    # Topic opt-out without unsubscribe-all: only this topic is stopped.
    Case(
        "marketing, topic opt-out only",
        state(OUT, (A,)),
        "marketing",
        False,
        (gate.OPTED_OUT_TOPIC,),
        "auth-1",
    ),
    # Suppression is per channel: an email suppression does not stop sms.
    Case(
        "marketing sms, email suppressed",
        state(SMS_IN, (A,), (sup("hard_bounce"),)),
        "marketing",
        True,
        (gate.AUTHORIZED,),
        "auth-1",
        channel="sms",
    ),
    # A removed suppression no longer applies.
    Case(
        "treatment, suppression removed before at",
        state(sups=(sup("manual", removed_at=AT - DAY / 2),)),
        "treatment",
        True,
        (gate.EXEMPT_CLASS,),
    ),
    # A suppression added after `at` did not apply at `at`.
    Case(
        "treatment, suppression after at",
        state(sups=(sup("manual", at=AT + DAY),)),
        "treatment",
        True,
        (gate.EXEMPT_CLASS,),
    ),
    # Every applicable suppression reason is listed.
    Case(
        "two suppression reasons",
        state(sups=(sup("hard_bounce"), sup("manual"))),
        "treatment",
        False,
        (gate.SUPPRESSED_HARD_BOUNCE, gate.SUPPRESSED_MANUAL),
    ),
    # --- marketing: 164.508(a)(3) authorization + opt-in --------------------------------
    # The happy path: valid authorization covering marketing by this sender, and opt-in.
    Case(
        "marketing, authorized and opted in",
        state(IN, (A,)),
        "marketing",
        True,
        (gate.AUTHORIZED,),
        "auth-1",
    ),
    # 164.508(a)(3): no authorization on file -> denied.
    Case("marketing, no authorization", state(IN), "marketing", False, (gate.NO_AUTHORIZATION,)),
    # Issue: marketing needs an opt-in for channel and topic; none recorded.
    Case(
        "marketing, authorized but no opt-in",
        state(auths=(A,)),
        "marketing",
        False,
        (gate.NO_OPT_IN,),
        "auth-1",
    ),
    # Neither: every reason is listed.
    Case(
        "marketing, nothing at all",
        state(),
        "marketing",
        False,
        (gate.NO_OPT_IN, gate.NO_AUTHORIZATION),
    ),
    # Opt-in is per channel: an sms opt-in does not cover email.
    Case(
        "marketing email, only sms opt-in",
        state(SMS_IN, (A,)),
        "marketing",
        False,
        (gate.NO_OPT_IN,),
        "auth-1",
    ),
    # 164.508(c)(1)(iii): a recipient not covered (sender not among recipients).
    Case(
        "marketing, sender not a recipient",
        state(IN, (A,)),
        "marketing",
        False,
        (gate.AUTH_RECIPIENT,),
        sender="other-co",
    ),
    # 164.508(c)(1)(iii): a third-party sender named among recipients is covered.
    Case(
        "marketing, third-party recipient covered",
        state(IN, (A,)),
        "marketing",
        True,
        (gate.AUTHORIZED,),
        "auth-1",
        sender="acme-pharmacy",
    ),
    # 164.508(c)(1)(iv): purposes that do not include marketing.
    Case(
        "marketing, purpose research only",
        state(IN, (auth(purposes=("research",)),)),
        "marketing",
        False,
        (gate.AUTH_PURPOSE,),
    ),
    # 164.508(c)(1)(v): expiry by date, evaluated at `at` (expired the day before).
    Case(
        "marketing, expired by date",
        state(IN, (auth(expires_at=AT - DAY),)),
        "marketing",
        False,
        (gate.AUTH_EXPIRED,),
    ),
    # 164.508(c)(1)(v): expiry exactly at `at` counts as expired.
    Case(
        "marketing, expires exactly at",
        state(IN, (auth(expires_at=AT),)),
        "marketing",
        False,
        (gate.AUTH_EXPIRED,),
    ),
    # 164.508(c)(1)(v): not yet expired at `at`.
    Case(
        "marketing, expires a second later",
        state(IN, (auth(expires_at=AT + DAY / 86400),)),
        "marketing",
        True,
        (gate.AUTHORIZED,),
        "auth-1",
    ),
    # 164.508(c)(1)(v): an expiry event, once recorded, ends it.
    Case(
        "marketing, expiry event recorded",
        state(IN, (auth(expires_at=None, expiry_event_at=AT - DAY),)),
        "marketing",
        False,
        (gate.AUTH_EXPIRY_EVENT,),
    ),
    # Expiry event recorded after `at`: still valid at `at`.
    Case(
        "marketing, expiry event after at",
        state(IN, (auth(expires_at=None, expiry_event_at=AT + DAY),)),
        "marketing",
        True,
        (gate.AUTHORIZED,),
        "auth-1",
    ),
    # Expiry by event, no event yet: valid.
    Case(
        "marketing, expiry event pending",
        state(IN, (auth(expires_at=None),)),
        "marketing",
        True,
        (gate.AUTHORIZED,),
        "auth-1",
    ),
    # 164.508(b)(5): revoked before `at` -> denied.
    Case(
        "marketing, revoked before at",
        state(IN, (auth(revoked_at=AT - DAY),)),
        "marketing",
        False,
        (gate.AUTH_REVOKED,),
    ),
    # 164.508(b)(5): revoked after `at` -> the decision at `at` still relies on it.
    Case(
        "marketing, revoked after at",
        state(IN, (auth(revoked_at=AT + DAY),)),
        "marketing",
        True,
        (gate.AUTHORIZED,),
        "auth-1",
    ),
    # 164.508(b)(5): revoked at the very instant -> revoked.
    Case(
        "marketing, revoked exactly at",
        state(IN, (auth(revoked_at=AT),)),
        "marketing",
        False,
        (gate.AUTH_REVOKED,),
    ),
    # 164.508(c)(1)(vi): signature and date; not signed yet at `at`.
    Case(
        "marketing, signed after at",
        state(IN, (auth(signed_at=AT + DAY),)),
        "marketing",
        False,
        (gate.AUTH_NOT_SIGNED,),
    ),
    # 164.508(c)(1)(vi): no signature at all.
    Case(
        "marketing, unsigned",
        state(IN, (auth(signed_at=None),)),
        "marketing",
        False,
        (gate.AUTH_NOT_SIGNED,),
    ),
    # 164.508(b)(2)(ii): missing core elements -> defective, fail closed.
    Case(
        "marketing, incomplete authorization",
        state(IN, (auth(complete=False),)),
        "marketing",
        False,
        (gate.AUTH_INCOMPLETE,),
    ),
    # Every defect of an authorization is listed (expired, revoked, wrong recipient).
    Case(
        "marketing, several defects",
        state(IN, (auth(expires_at=AT - DAY, revoked_at=AT - DAY),)),
        "marketing",
        False,
        (gate.AUTH_EXPIRED, gate.AUTH_REVOKED, gate.AUTH_RECIPIENT),
        sender="other-co",
    ),
    # Two authorizations, one revoked and one valid: the valid one is relied on.
    Case(
        "marketing, one revoked one valid",
        state(IN, (auth("old", revoked_at=AT - DAY), auth("new"))),
        "marketing",
        True,
        (gate.AUTHORIZED,),
        "new",
    ),
    # Two valid authorizations: the most recently signed is relied on.
    Case(
        "marketing, two valid",
        state(IN, (auth("a1", signed_at=AT - 9 * DAY), auth("a2", signed_at=AT - 2 * DAY))),
        "marketing",
        True,
        (gate.AUTHORIZED,),
        "a2",
    ),
    # Marketing opt-in withdrawn (latest statement opted out) with valid authorization.
    Case(
        "marketing, opted in then out",
        state(
            {("email", "newsletter"): (opt("opted_in", AT - 9 * DAY), opt("opted_out", AT - DAY))},
            (A,),
        ),
        "marketing",
        False,
        (gate.OPTED_OUT_TOPIC,),
        "auth-1",
    ),
    # --- paid marketing: 164.508(a)(3)(ii) remuneration statement -----------------------
    # Paid marketing without the remuneration statement.
    Case(
        "marketing_paid, no remuneration statement",
        state(IN, (A,)),
        "marketing_paid",
        False,
        (gate.AUTH_REMUNERATION,),
    ),
    # Paid marketing with it.
    Case(
        "marketing_paid, remuneration stated",
        state(IN, (auth(remuneration=True),)),
        "marketing_paid",
        True,
        (gate.AUTHORIZED,),
        "auth-1",
    ),
    # Paid marketing also needs everything marketing needs (opt-in).
    Case(
        "marketing_paid, no opt-in",
        state(auths=(auth(remuneration=True),)),
        "marketing_paid",
        False,
        (gate.NO_OPT_IN,),
        "auth-1",
    ),
    # The remuneration statement does not make up for an expired authorization.
    Case(
        "marketing_paid, remuneration but expired",
        state(IN, (auth(remuneration=True, expires_at=AT - DAY),)),
        "marketing_paid",
        False,
        (gate.AUTH_EXPIRED,),
    ),
    # --- fail closed on unknown input ---------------------------------------------------
    # An unknown class is denied (never treated as exempt).
    Case("unknown class", state(IN, (A,)), "promo", False, (gate.UNKNOWN_CLASS,)),
    # An unknown channel is denied.
    Case("unknown channel", state(), "treatment", False, (gate.UNKNOWN_CHANNEL,), channel="fax"),
]


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_scenario(case: Case) -> None:
    decision = gate.decide(
        case.state, case.message_class, case.channel, case.topic, case.sender, AT
    )
    assert decision.allowed is case.allowed
    assert decision.reasons == case.reasons
    assert decision.authorization_id == case.authorization_id


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_scenario_batch_form_agrees(case: Case) -> None:
    [decision] = gate.decide_batch(
        {case.state.contact_id: case.state},
        [case.state.contact_id],
        case.message_class,
        case.channel,
        case.topic,
        case.sender,
        AT,
    )
    assert decision == gate.decide(
        case.state, case.message_class, case.channel, case.topic, case.sender, AT
    )


def test_unknown_contact_in_batch_is_denied() -> None:
    decisions = gate.decide_batch({}, ["nobody"], "treatment", "email", "x", "self", AT)
    assert decisions == [gate.Decision(False, (gate.UNKNOWN_CONTACT,), None)]


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        gate.decide(state(), "treatment", "email", "x", "self", AT.replace(tzinfo=None))


def test_every_reason_code_is_explained() -> None:
    for code in (*gate.DENIAL_ORDER, gate.EXEMPT_CLASS, gate.AUTHORIZED):
        assert gate.EXPLANATIONS[code]
