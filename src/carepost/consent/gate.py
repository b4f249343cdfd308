"""The send gate: a pure function of plain data and a time.

No database, no network, no clock: `decide(contact_state, message_class, channel, topic,
sender, at)` says whether one message may go, with every reason that applies and the
authorization relied on. `decide_batch` does the same for many recipients over a preloaded
state; it runs the same code per recipient, so both forms always agree.

Rules (the issue's, with their sources):

* Suppression always wins (hard bounce, spam complaint, manual, unsubscribe-all) for every
  class on the suppressed channel (CAN-SPAM 15 U.S.C. 7704(a)(4); RFC 8058 section 3).
* `treatment`, `operations`, `transactional` need no authorization (45 CFR 164.501,
  "marketing" paragraph (1)(i)-(iii) exclusions; 164.506) but honour an opt-out for their
  channel and topic.
* `marketing` needs a signed, unexpired, unrevoked authorization whose purposes include
  marketing and whose recipients include the sender (164.508(a)(3), (b)(5), (c)(1)),
  an opt-in for the channel and topic, and no unsubscribe-all.
* `marketing_paid` also needs the remuneration statement (164.508(a)(3)(ii)).
* Expiry by date is evaluated at `at`; an expiry event ends it once recorded at or before
  `at`; a revocation counts from its time (164.508(b)(5)).
* Anything unknown (class, channel, contact) is denied: the gate fails closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from carepost.consent.records import (
    CHANNELS,
    EXEMPT_CLASSES,
    MARKETING_CLASSES,
    MARKETING_PAID,
    OPTED_OUT,
    PURPOSE_MARKETING,
    AuthorizationState,
    ContactState,
)

# --- reason codes ----------------------------------------------------------------------
# Basis of an allowed decision (exactly one).
EXEMPT_CLASS = "exempt_class"
AUTHORIZED = "authorized_and_opted_in"
# Denials (every one that applies, in this order).
UNKNOWN_CONTACT = "unknown_contact"
UNKNOWN_CLASS = "unknown_message_class"
UNKNOWN_CHANNEL = "unknown_channel"
SUPPRESSED_HARD_BOUNCE = "suppressed_hard_bounce"
SUPPRESSED_SPAM_COMPLAINT = "suppressed_spam_complaint"
SUPPRESSED_MANUAL = "suppressed_manual"
SUPPRESSED_UNSUBSCRIBE_ALL = "suppressed_unsubscribe_all"
OPTED_OUT_TOPIC = "opted_out"
NO_OPT_IN = "no_opt_in"
NO_AUTHORIZATION = "no_authorization"
AUTH_INCOMPLETE = "authorization_incomplete"
AUTH_NOT_SIGNED = "authorization_not_signed"
AUTH_EXPIRED = "authorization_expired"
AUTH_EXPIRY_EVENT = "authorization_expiry_event"
AUTH_REVOKED = "authorization_revoked"
AUTH_PURPOSE = "authorization_purpose_not_marketing"
AUTH_RECIPIENT = "authorization_sender_not_recipient"
AUTH_REMUNERATION = "authorization_no_remuneration_statement"

DENIAL_ORDER: tuple[str, ...] = (
    UNKNOWN_CONTACT,
    UNKNOWN_CLASS,
    UNKNOWN_CHANNEL,
    SUPPRESSED_HARD_BOUNCE,
    SUPPRESSED_SPAM_COMPLAINT,
    SUPPRESSED_MANUAL,
    SUPPRESSED_UNSUBSCRIBE_ALL,
    OPTED_OUT_TOPIC,
    NO_OPT_IN,
    NO_AUTHORIZATION,
    AUTH_INCOMPLETE,
    AUTH_NOT_SIGNED,
    AUTH_EXPIRED,
    AUTH_EXPIRY_EVENT,
    AUTH_REVOKED,
    AUTH_PURPOSE,
    AUTH_RECIPIENT,
    AUTH_REMUNERATION,
)
_RANK = {code: i for i, code in enumerate(DENIAL_ORDER)}

EXPLANATIONS: dict[str, str] = {
    EXEMPT_CLASS: "treatment, operations and transactional messages need no authorization; "
    "no opt-out for this channel and topic",
    AUTHORIZED: "a valid HIPAA authorization covers marketing by this sender, and the contact "
    "opted in for this channel and topic",
    UNKNOWN_CONTACT: "no such contact (or it was deleted)",
    UNKNOWN_CLASS: "the message class is not one the gate knows",
    UNKNOWN_CHANNEL: "the channel is not one the gate knows",
    SUPPRESSED_HARD_BOUNCE: "the address is suppressed: hard bounce",
    SUPPRESSED_SPAM_COMPLAINT: "the address is suppressed: spam complaint",
    SUPPRESSED_MANUAL: "the address is suppressed by staff",
    SUPPRESSED_UNSUBSCRIBE_ALL: "the contact unsubscribed from everything on this channel",
    OPTED_OUT_TOPIC: "the contact opted out of this topic on this channel",
    NO_OPT_IN: "marketing needs an opt-in for this channel and topic; there is none",
    NO_AUTHORIZATION: "marketing needs a HIPAA authorization (45 CFR 164.508(a)(3)); none on file",
    AUTH_INCOMPLETE: "the authorization lacks required elements (164.508(c))",
    AUTH_NOT_SIGNED: "the authorization was not signed at that time",
    AUTH_EXPIRED: "the authorization expired (164.508(c)(1)(v))",
    AUTH_EXPIRY_EVENT: "the authorization's expiration event was recorded (164.508(c)(1)(v))",
    AUTH_REVOKED: "the authorization was revoked (164.508(b)(5))",
    AUTH_PURPOSE: "the authorization's purposes do not include marketing (164.508(c)(1)(iv))",
    AUTH_RECIPIENT: "the sender is not among the authorization's recipients (164.508(c)(1)(iii))",
    AUTH_REMUNERATION: "paid marketing needs the remuneration statement (164.508(a)(3)(ii))",
}

SUPPRESSION_CODES = {
    "hard_bounce": SUPPRESSED_HARD_BOUNCE,
    "spam_complaint": SUPPRESSED_SPAM_COMPLAINT,
    "manual": SUPPRESSED_MANUAL,
    "unsubscribe_all": SUPPRESSED_UNSUBSCRIBE_ALL,
}


class Decision(NamedTuple):
    """allowed, every reason code (one basis code when allowed; every denial otherwise),
    and the authorization relied on (set whenever a valid one was found, even when the
    message is denied for another reason such as an opt-out)."""

    allowed: bool
    reasons: tuple[str, ...]
    authorization_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "authorization_id": self.authorization_id,
            "explanations": [EXPLANATIONS.get(r, r) for r in self.reasons],
        }


ALLOWED_EXEMPT = Decision(True, (EXEMPT_CLASS,), None)
_NONE: tuple[str, ...] = ()


def _ordered(codes: list[str]) -> tuple[str, ...]:
    return tuple(sorted(set(codes), key=_RANK.__getitem__))


def authorization_problems(
    a: AuthorizationState, at: datetime, sender: str, paid: bool
) -> tuple[str, ...]:
    """Why this authorization does not support this marketing message at `at` (empty when
    it does)."""
    problems: list[str] | None = None
    if not a.complete:
        problems = [AUTH_INCOMPLETE]
    signed = a.signed_at
    if signed is None or signed > at:
        problems = (problems or []) + [AUTH_NOT_SIGNED]
    exp = a.expires_at
    if exp is not None and at >= exp:
        problems = (problems or []) + [AUTH_EXPIRED]
    event = a.expiry_event_at
    if event is not None and event <= at:
        problems = (problems or []) + [AUTH_EXPIRY_EVENT]
    revoked = a.revoked_at
    if revoked is not None and revoked <= at:
        problems = (problems or []) + [AUTH_REVOKED]
    if PURPOSE_MARKETING not in a.purposes:
        problems = (problems or []) + [AUTH_PURPOSE]
    if sender not in a.recipients:
        problems = (problems or []) + [AUTH_RECIPIENT]
    if paid and not a.remuneration_statement:
        problems = (problems or []) + [AUTH_REMUNERATION]
    return _NONE if problems is None else tuple(problems)


def _decide(
    state: ContactState,
    exempt: bool,
    paid: bool,
    channel: str,
    key: tuple[str, str],
    sender: str,
    at: datetime,
) -> Decision:
    reasons: list[str] | None = None
    # 1. Suppression always wins.
    for s in state.suppressions:
        if s.channel == channel and s.at <= at and (s.removed_at is None or s.removed_at > at):
            reasons = (reasons or []) + [SUPPRESSION_CODES.get(s.reason, SUPPRESSED_MANUAL)]
    # 2. The consent for this channel and topic in force at `at` (history, latest wins).
    status = None
    events = state.consents.get(key)
    if events:
        for ev in reversed(events):
            if ev.at <= at:
                status = ev.status
                break
    if status == OPTED_OUT:
        reasons = (reasons or []) + [OPTED_OUT_TOPIC]
    if exempt:
        if reasons is None:
            return ALLOWED_EXEMPT
        return Decision(False, _ordered(reasons), None)
    # 3. Marketing: an opt-in and a valid authorization.
    if status is None:
        reasons = (reasons or []) + [NO_OPT_IN]
    relied: AuthorizationState | None = None
    auths = state.authorizations
    if not auths:
        reasons = (reasons or []) + [NO_AUTHORIZATION]
    else:
        failed: list[str] = []
        for a in auths:
            problems = authorization_problems(a, at, sender, paid)
            if problems:
                failed.extend(problems)
            elif relied is None or (a.signed_at, a.id) > (relied.signed_at, relied.id):
                relied = a  # the most recently signed valid one, ties by id
        if relied is None:
            reasons = (reasons or []) + failed
    rid = relied.id if relied is not None else None
    if reasons is None:
        return Decision(True, (AUTHORIZED,), rid)
    return Decision(False, _ordered(reasons), rid)


def _classify(message_class: str, channel: str) -> tuple[bool, bool, list[str]]:
    problems: list[str] = []
    if message_class not in EXEMPT_CLASSES and message_class not in MARKETING_CLASSES:
        problems.append(UNKNOWN_CLASS)
    if channel not in CHANNELS:
        problems.append(UNKNOWN_CHANNEL)
    return message_class in EXEMPT_CLASSES, message_class == MARKETING_PAID, problems


def decide(
    contact_state: ContactState,
    message_class: str,
    channel: str,
    topic: str,
    sender: str,
    at: datetime,
) -> Decision:
    """The gate for one message. `at` must be an aware datetime."""
    if at.tzinfo is None:
        raise ValueError("the gate needs an aware datetime")
    exempt, paid, problems = _classify(message_class, channel)
    if problems:
        return Decision(False, _ordered(problems), None)
    return _decide(contact_state, exempt, paid, channel, (channel, topic), sender, at)


def decide_batch(
    states: Mapping[str, ContactState],
    contact_ids: Sequence[str],
    message_class: str,
    channel: str,
    topic: str,
    sender: str,
    at: datetime,
) -> list[Decision]:
    """The gate for one message to many contacts over a preloaded state, in input order.

    A contact id missing from `states` is denied (`unknown_contact`): the loader found no
    such contact, and an unknown recipient never gets mail.
    """
    if at.tzinfo is None:
        raise ValueError("the gate needs an aware datetime")
    exempt, paid, problems = _classify(message_class, channel)
    if problems:
        denied = Decision(False, _ordered(problems), None)
        return [denied] * len(contact_ids)
    unknown = Decision(False, (UNKNOWN_CONTACT,), None)
    key = (channel, topic)
    get = states.get
    out: list[Decision] = []
    append = out.append
    for cid in contact_ids:
        state = get(cid)
        if state is None:
            append(unknown)
        else:
            append(_decide(state, exempt, paid, channel, key, sender, at))
    return out
