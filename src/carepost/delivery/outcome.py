"""What an SMTP attempt's result means for the message: the pure decision core of delivery.

Where the attempt stopped matters as much as the reply. Before the body is sent, any
failure means the relay does not have the message, so it can be retried freely
(`deferred`) or given up (`failed`). Once the body's final dot is on the wire, a lost
connection or a timeout leaves it `unknown`: the relay may have queued it. An unknown
message is retried once with the same Message-ID, so a receiver that got both can tell
the copies apart (see docs/architecture.md, "At-least-once, bounded").

Bounce kinds decide suppression: only a `hard` bounce (the mailbox does not exist) puts
an address on the suppression list. A full mailbox (5.2.2) is `soft`; a content or policy
refusal (5.7.x, 554) is `policy` and says nothing about the address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Status = Literal["sent", "deferred", "failed", "unknown"]
Phase = Literal["connect", "tls", "mail", "rcpt", "data", "after_data"]
Bounce = Literal["hard", "soft", "policy"]

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")

# Reason codes, stable: evidence, reports and alerts use them.
REASONS = {
    "accepted": "the relay accepted the message",
    "reply_4xx": "the relay answered with a temporary failure",
    "reply_5xx": "the relay refused the message permanently",
    "connect_failed": "no connection to the relay",
    "tls_unavailable": "the relay offers no STARTTLS; nothing was sent in plaintext",
    "tls_failed": "TLS negotiation or certificate verification failed; nothing was sent",
    "timeout": "the relay did not answer in time before the body was sent",
    "lost_before_data": "the connection dropped before the body was sent",
    "lost_after_data": "the connection dropped after the body was sent; the relay may have it",
    "timeout_after_data": "no reply after the body was sent; the relay may have it",
    "relay_refused": "the relay refused the session before any message was offered",
    "auth_failed": "the relay refused carepost's credentials; nothing was sent",
    "invalid_address": "the address cannot be written into an SMTP command",
    # Direct delivery: the recipient's own server, not our relay, could not give the TLS
    # the message requires. Never an operator alert; the worker falls back to the portal
    # or fails the message, as the sender profile says.
    "mx_tls_unavailable": "the recipient's mail server offers no STARTTLS; nothing was sent",
    "mx_tls_failed": "the recipient's mail server failed TLS or its certificate; nothing was sent",
    "mx_refused": "the recipient's mail server refused the session; retried later",
    # Direct delivery: the recipient's domain, as DNS describes it.
    "null_mx": "the recipient's domain accepts no mail (null MX, RFC 7505)",
    "no_mail_host": "the recipient's domain has no MX and no address to deliver to",
    "dns_failed": "the recipient's domain could not be looked up; retried later",
    # Direct delivery: carepost's own limits. Nothing was sent, and the retry does not
    # spend the message's retry budget (Outcome.retry_at says when).
    "warmup_cap": "the sending IP's warm-up cap for today is reached; retried tomorrow",
    "domain_throttled": "the recipient domain's rate limit is reached; retried shortly",
}

# Reasons no single message caused: every message fails the same way until an operator
# acts, so each batch that meets one records an alert with what to check.
ALERTS = {
    "tls_unavailable": "no message was sent in plaintext; check the relay's TLS",
    "tls_failed": "no message was sent in plaintext; check the relay's TLS",
    "relay_refused": "the relay refused the session; check its address and limits",
    "auth_failed": "the relay refused the credentials; check CAREPOST_SMTP_USERNAME/PASSWORD",
}


@dataclass(frozen=True)
class Outcome:
    status: Status
    reason: str
    phase: Phase
    code: int | None = None
    enhanced: str | None = None
    bounce: Bounce | None = None
    # Set by carepost's own limits (warm-up caps, domain rates): retry at this time, and
    # do not count this try against the message's retry budget (delivery.machine).
    retry_at: datetime | None = None

    @property
    def tls_alert(self) -> bool:
        """Nothing went out because TLS could not be had: operators must hear of it."""
        return self.reason in ("tls_unavailable", "tls_failed")

    @property
    def recipient_tls_failure(self) -> bool:
        """The recipient's server cannot take this message with the TLS it requires."""
        return self.reason in ("mx_tls_unavailable", "mx_tls_failed")

    @property
    def alert(self) -> str | None:
        """What an operator must check, when the relay rather than the message failed."""
        return ALERTS.get(self.reason)


def enhanced_status(text: str) -> str | None:
    match = _ENHANCED.match(text)
    return ".".join(match.groups()) if match else None


def bounce_kind(code: int, enhanced: str | None) -> Bounce:
    if enhanced is not None:
        klass, subject, _ = enhanced.split(".")
        if klass == "5" and subject == "1":
            return "hard"  # 5.1.x: bad destination mailbox or address
        if subject == "2":
            return "soft"  # 5.2.x: mailbox status (full, disabled for now)
        if subject == "7":
            return "policy"
    if code in (550, 551, 553):
        return "hard"
    if code == 552:
        return "soft"
    return "policy"


def classify_reply(phase: Phase, code: int, text: str) -> Outcome:
    """A reply to MAIL, RCPT, or the end of DATA (phase "data")."""
    enhanced = enhanced_status(text)
    if 200 <= code < 300:
        return Outcome("sent", "accepted", phase, code, enhanced)
    if 400 <= code < 500:
        return Outcome("deferred", "reply_4xx", phase, code, enhanced, "soft")
    if 500 <= code < 600:
        return Outcome("failed", "reply_5xx", phase, code, enhanced, bounce_kind(code, enhanced))
    # Anything else is a protocol violation; treat it as temporary rather than guess.
    return Outcome("deferred", "reply_4xx", phase, code, enhanced)


def classify_error(phase: Phase, kind: Literal["timeout", "lost", "connect", "tls"]) -> Outcome:
    """No reply: the connection failed, timed out or dropped in `phase`."""
    if phase == "after_data":
        reason = "timeout_after_data" if kind == "timeout" else "lost_after_data"
        return Outcome("unknown", reason, phase)
    if kind == "tls":
        return Outcome("deferred", "tls_failed", phase)
    if kind == "connect":
        return Outcome("deferred", "connect_failed", phase)
    if kind == "timeout":
        return Outcome("deferred", "timeout", phase)
    return Outcome("deferred", "lost_before_data", phase)


def tls_unavailable() -> Outcome:
    return Outcome("deferred", "tls_unavailable", "tls")


def session_refused(step: str, code: int, text: str) -> Outcome:
    """The relay refused the greeting, EHLO, STARTTLS or AUTH. That is the relay's (or our
    configuration's) state, not the message's: deferred, never a bounce, whatever the code."""
    phase: Phase = "tls" if step == "starttls" else "connect"
    reason = "auth_failed" if step == "auth" else "relay_refused"
    return Outcome("deferred", reason, phase, code, enhanced_status(text))


def mx_tls_unavailable() -> Outcome:
    return Outcome("deferred", "mx_tls_unavailable", "tls")


def mx_tls_failed() -> Outcome:
    return Outcome("deferred", "mx_tls_failed", "tls")


def invalid_address() -> Outcome:
    return Outcome("failed", "invalid_address", "mail")


def dns_failed() -> Outcome:
    return Outcome("deferred", "dns_failed", "connect")


def null_mx() -> Outcome:
    return Outcome("failed", "null_mx", "connect")


def no_mail_host() -> Outcome:
    # Deferred, not failed: a domain without MX or address records is most often one
    # whose DNS is being changed; retries run out in about a day (RetryPolicy).
    return Outcome("deferred", "no_mail_host", "connect")


def held_back(reason: Literal["warmup_cap", "domain_throttled"], retry_at: datetime) -> Outcome:
    """carepost's own limit stopped the message before any connection: retry at
    `retry_at` without spending the retry budget."""
    if retry_at.tzinfo is None:
        raise ValueError("retry_at must be an aware datetime")
    return Outcome("deferred", reason, "connect", retry_at=retry_at)


def mx_refused(code: int, text: str) -> Outcome:
    """A recipient's server refused the greeting or EHLO: its state, not the message's,
    and not ours to alert on (unlike a relay's refusal)."""
    return Outcome("deferred", "mx_refused", "connect", code, enhanced_status(text))
