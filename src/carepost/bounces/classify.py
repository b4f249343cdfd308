"""A parsed `Report` → a category and, per recipient, hard or soft.

Hard means the address itself is no good (no such mailbox, no such domain, moved): suppress
it. Soft means this message failed for a reason that may pass or that lies with us (full
mailbox, too large, timed out, blocked by policy or reputation): let the retry policy decide.
Evidence is read strongest first: the RFC 3463 enhanced status code when it is specific,
then the server's words, then the SMTP reply code."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from carepost.bounces.report import Recipient, Report

Category = Literal[
    "bounce-hard", "bounce-soft", "complaint", "auto-reply", "delayed", "delivered", "not-bounce"
]
Severity = Literal["hard", "soft"]


@dataclass(frozen=True)
class Verdict:
    address: str
    status: str
    reply_code: str
    severity: Severity | None  # None for recipients that did not fail
    reason: str  # which rule decided, for the operator


@dataclass(frozen=True)
class Classification:
    category: Category
    recipients: tuple[Verdict, ...]
    mixed: bool = False  # hard and soft recipients in one report
    feedback_type: str = ""


# Specific RFC 3463 codes whose meaning settles the question on its own.
EXACT_STATUS: dict[str, tuple[Severity, str]] = {
    "5.1.1": ("hard", "bad destination mailbox"),
    "5.1.2": ("hard", "bad destination domain"),
    "5.1.3": ("hard", "bad destination address syntax"),
    "5.1.4": ("hard", "ambiguous destination mailbox"),
    "5.1.6": ("hard", "mailbox has moved"),
    "5.1.10": ("hard", "recipient not found (null MX, or Exchange lookup)"),
    "5.2.1": ("hard", "mailbox disabled"),
    "5.2.2": ("soft", "mailbox full"),
    "5.2.3": ("soft", "message too large for the mailbox"),
    "5.2.4": ("soft", "mailing list expansion problem"),
    "5.3.4": ("soft", "message too big for the system"),
    "5.4.4": ("hard", "unable to route: no such domain"),
    "5.4.6": ("soft", "routing loop"),
    "5.4.7": ("soft", "delivery time expired"),
    "5.1.7": ("soft", "bad sender address"),
    "5.1.8": ("soft", "bad sender domain"),
}

# When the code is generic (x.y.0) or unlisted, the subject sets the default after the
# words have had their say. 5.7 is policy (spam, reputation, authentication): the address
# is fine, the sender is not, so suppressing the patient's address would be wrong.
SUBJECT_DEFAULT: dict[str, tuple[Severity, str]] = {
    "1": ("hard", "addressing problem"),
    "2": ("soft", "mailbox status problem"),
    "3": ("soft", "mail system problem"),
    "4": ("soft", "network or routing problem"),
    "5": ("hard", "protocol rejection"),
    "6": ("soft", "message content problem"),
    "7": ("soft", "security or policy rejection"),
}


@dataclass(frozen=True)
class TextRule:
    pattern: re.Pattern[str]
    severity: Severity
    reason: str


def _rule(words: str, severity: Severity, reason: str) -> TextRule:
    return TextRule(re.compile(words, re.IGNORECASE), severity, reason)


# Widely used MTA phrasings, first match wins. Full/too-large/expired come first: "mailbox
# full" must beat the "mailbox unavailable" such replies also carry. Missing-address phrases
# beat policy words because a notice saying the account may not exist often adds "or may
# be blacklisted" as boilerplate.
TEXT_RULES: tuple[TextRule, ...] = (
    _rule(
        r"mailbox (?:is )?full|over ?quota|quota|exceeded? (?:the )?"
        r"(?:storage|quota)|insufficient (?:disk )?(?:space|storage)|mailbox size limit"
        r"|user(?:'s)? (?:mailbox|disk) (?:is )?(?:full|over)|not enough (?:storage|space)",
        "soft",
        "mailbox full",
    ),
    _rule(
        r"message (?:size )?(?:is )?too (?:large|big)|exceeds? (?:the )?(?:fixed )?"
        r"maximum (?:message )?size|message size exceeds|size limit",
        "soft",
        "message too large",
    ),
    _rule(
        r"retry time(?:out)? (?:was )?exceeded|retry timeout|timed? ?out|expired|"
        r"could not be delivered within|giving up|too long in (?:the )?queue"
        r"|has been delayed",
        "soft",
        "delivery expired",
    ),
    _rule(
        r"sender address rejected|sender (?:domain|address) (?:not found|invalid|must exist)",
        "soft",
        "our sender address refused",
    ),
    _rule(
        r"account (?:has been |is )?(?:suspended|inactive|temporarily disabled)"
        r"|mailbox (?:is )?(?:suspended|inactive)",
        "soft",
        "account suspended or inactive",
    ),
    _rule(
        r"has been replaced by|(?:address|mailbox|user) has moved|no longer (?:valid|in use|"
        r"available|here|with)",
        "hard",
        "address has moved",
    ),
    _rule(
        r"user unknown|unknown (?:user|recipient|mailbox|address)|no such (?:user|mailbox|"
        r"recipient|address|account)|(?:user|mailbox|address|account|recipient)"
        r"(?: name)? (?:does not|doesn't|did not) exist|(?:is )?not a valid (?:user|"
        r"mailbox|recipient)|invalid (?:recipient|mailbox|user|address)|recipient "
        r"(?:address )?rejected|mailbox (?:unavailable|not found|disabled)|account "
        r"(?:has been |is )?(?:disabled|closed|deleted|discontinued)|unrouteable address"
        r"|address rejected|no mailbox here|user not found|undeliverable address"
        r"|account or domain may not exist|recipient not found|no such person"
        r"|(?:does not|doesn't) have an? (?:[\w.-]+ )?account",
        "hard",
        "no such mailbox",
    ),
    _rule(
        r"host (?:or domain name )?not found|domain (?:not found|does not exist)|no such "
        r"domain|unrouteable domain|nxdomain|name or service not known|no mx"
        r"|unable to route|mx (?:record )?(?:not found|lookup)|does not accept (?:e-?)?mail"
        r"|non-?existent (?:host|domain)",
        "hard",
        "no such domain",
    ),
    _rule(
        r"blocked|blacklist|block ?list|denylist|spam|reputation|rate limit|too many"
        r"|try again later|temporar|greylist|policy|dmarc|spf|dkim|unauthenticated"
        r"|not authorized|relay(?:ing)? (?:access )?denied|virus|content rejected",
        "soft",
        "policy or reputation",
    ),
)

_SOFT_REPLY = {"552": "mailbox storage exceeded"}
_HARD_REPLY = {"550", "551", "553", "554", "556"}


def recipient_severity(rcpt: Recipient) -> tuple[Severity, str]:
    status = rcpt.status
    if status.startswith("4") or (rcpt.reply_code.startswith("4") and not status):
        return "soft", "transient failure (4xx)"
    if status in EXACT_STATUS:
        return EXACT_STATUS[status]
    for rule in TEXT_RULES:
        if rule.pattern.search(rcpt.diagnostic):
            return rule.severity, rule.reason
    if status.startswith("5."):
        subject = status.split(".")[1]
        if subject in SUBJECT_DEFAULT:
            return SUBJECT_DEFAULT[subject]
    if rcpt.reply_code in _SOFT_REPLY:
        return "soft", _SOFT_REPLY[rcpt.reply_code]
    if rcpt.reply_code in _HARD_REPLY:
        return "hard", "permanent rejection (5xx)"
    return "soft", "unclear failure; left to retries"


_COMPLETED = {"delivered", "relayed", "expanded"}
_DELIVERED_TEXT = re.compile(
    r"\b(?:delivery to (?:the following|these) recipients?(?: or groups)? "
    r"(?:was|has been) (?:successful|complete)|successfully delivered|has been delivered)\b",
    re.IGNORECASE,
)
_DELAY_TEXT = re.compile(
    r"\b(?:will (?:continue|keep) (?:trying|to try)|will retry|still trying|has been delayed"
    r"|not yet been delivered|delivery delayed|is delayed)\b",
    re.IGNORECASE,
)


def _failed_action(rcpt: Recipient) -> str:
    if rcpt.action:
        return rcpt.action.split()[0]
    if rcpt.status.startswith("2"):
        return "delivered"
    return "failed"


def classify(report: Report) -> Classification:
    if report.kind == "arf":
        verdicts = tuple(Verdict(r.address, "", "", None, "complaint") for r in report.recipients)
        return Classification("complaint", verdicts, feedback_type=report.feedback_type)
    if report.kind == "auto-reply":
        return Classification("auto-reply", ())
    if report.kind == "none":
        return Classification("not-bounce", ())
    # A prose warning ("will retry", "has been delayed") with no permanent code is a delay
    # notice, not a failure: the remote server still holds the message.
    if (
        report.kind == "text-bounce"
        and _DELAY_TEXT.search(report.text)
        and not any(r.status.startswith("5") for r in report.recipients)
    ):
        verdicts = tuple(
            Verdict(r.address, r.status, r.reply_code, None, "delayed") for r in report.recipients
        )
        return Classification("delayed", verdicts)
    if (
        report.kind == "text-bounce"
        and _DELIVERED_TEXT.search(report.text)
        and not any(r.status.startswith(("4", "5")) for r in report.recipients)
    ):
        verdicts = tuple(
            Verdict(r.address, r.status, r.reply_code, None, "delivered") for r in report.recipients
        )
        return Classification("delivered", verdicts)
    verdicts_list: list[Verdict] = []
    actions = set()
    for rcpt in report.recipients:
        action = _failed_action(rcpt)
        actions.add(action)
        if action == "failed":
            severity, reason = recipient_severity(rcpt)
            verdicts_list.append(
                Verdict(rcpt.address, rcpt.status, rcpt.reply_code, severity, reason)
            )
        else:
            verdicts_list.append(Verdict(rcpt.address, rcpt.status, rcpt.reply_code, None, action))
    verdicts = tuple(verdicts_list)
    severities = {v.severity for v in verdicts if v.severity}
    if severities:
        category: Category = "bounce-hard" if "hard" in severities else "bounce-soft"
        return Classification(category, verdicts, mixed=len(severities) > 1)
    if "delayed" in actions:
        return Classification("delayed", verdicts)
    if actions and actions <= _COMPLETED:
        return Classification("delivered", verdicts)
    if report.kind == "text-bounce":
        # A bounce whose recipient we could not find still bounced; the operator sees none.
        return Classification("bounce-soft", verdicts)
    return Classification("not-bounce", verdicts)
