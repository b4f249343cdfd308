"""Pure core: bounce and complaint rates, and when a complaint rate is an alert.

The limit is Gmail's and Yahoo's for bulk senders (February 2024 requirements): keep
user-reported spam below 0.3%. Two choices make the figure mean something:

* **Minimum volume: 1,000 delivered messages** in the scope. Below that one complaint
  moves the rate by 0.1 points or more, so a clinic mailing 200 patients would cross the
  limit with a single click and learn nothing from the alert. At 1,000 it takes four
  complaints (0.4%), the point where the mailbox providers' own dashboards start to show a
  stable daily rate for a sender. An operator can lower it (settings) for small lists.
* **Windows.** A campaign is judged over its whole life: it is one mailing, and its
  complaints arrive over days. A sending domain is judged over the last 24 hours, because
  that is how Gmail and Yahoo measure a domain (a daily rate) and a domain's reputation is
  what is at stake across campaigns.

An alert is raised when a scope goes over the limit with no alert open for it, and the
open alert is cleared when the scope is seen back at or under the limit: once per crossing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from carepost.delivery.outcome import bounce_kind, enhanced_status

COMPLAINT_LIMIT = 0.003
# RFC 5965 / RFC 6591 feedback types that report the mail stream (DMARC, fraud, malware),
# not a person's wish: recorded, never counted as a complaint or acted on as one.
NOT_A_PERSON = frozenset({"auth-failure", "fraud", "virus"})
MIN_DELIVERED = 1000
DOMAIN_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class RatePolicy:
    limit: float = COMPLAINT_LIMIT
    min_delivered: int = MIN_DELIVERED
    domain_window: timedelta = DOMAIN_WINDOW


@dataclass(frozen=True)
class Counts:
    """`sent`: accepted by the receiving side. `rejected`: refused live (5xx) on delivery.
    `hard`/`soft`: messages that bounced (live or by a later report), each counted once.
    `complaints`: messages a person reported (not ARF auth-failure, fraud or virus)."""

    sent: int
    rejected: int
    hard: int
    soft: int
    complaints: int

    @property
    def attempted(self) -> int:
        return self.sent + self.rejected

    @property
    def hard_rate(self) -> float:
        return self.hard / self.attempted if self.attempted else 0.0

    @property
    def soft_rate(self) -> float:
        return self.soft / self.attempted if self.attempted else 0.0

    @property
    def complaint_rate(self) -> float:
        # Only delivered mail can be reported as spam.
        return self.complaints / self.sent if self.sent else 0.0


def over_limit(counts: Counts, policy: RatePolicy) -> bool:
    """Strictly above the limit, with enough volume for the rate to mean something."""
    return counts.sent >= policy.min_delivered and counts.complaint_rate > policy.limit


def crossing(alert_open: bool, over: bool) -> Literal["raise", "clear"] | None:
    if over and not alert_open:
        return "raise"
    if alert_open and not over:
        return "clear"
    return None


def live_kind(code: int | None, reply: str | None) -> str:
    """A 5xx refusal by delivery.outcome's rule: 5.1.x (or, without an enhanced code,
    550/551/553) hard, anything else soft. The stored reply starts with its 3-digit code,
    which goes before the enhanced status is read."""
    text = (reply or "").lstrip()
    if text[:3].isdigit():
        text = text[3:].lstrip(" -")
    kind = bounce_kind(int(code or 550), enhanced_status(text))
    return "hard" if kind == "hard" else "soft"
