"""Plain, immutable shapes the gate decides on. No database, no PHI: ids, codes, times.

`ContactState` is what the gate knows about one contact at decision time. The service
builds it from the tables in a few queries per batch; tests build it by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

# --- vocabulary ------------------------------------------------------------------------
TREATMENT: Final = "treatment"
OPERATIONS: Final = "operations"
TRANSACTIONAL: Final = "transactional"
MARKETING: Final = "marketing"
MARKETING_PAID: Final = "marketing_paid"
MESSAGE_CLASSES: Final = (TREATMENT, OPERATIONS, TRANSACTIONAL, MARKETING, MARKETING_PAID)
# Classes that need no HIPAA authorization (45 CFR 164.501 "marketing" exclusions, and
# CAN-SPAM transactional or relationship messages); they still honour opt-outs.
EXEMPT_CLASSES: Final = frozenset({TREATMENT, OPERATIONS, TRANSACTIONAL})
MARKETING_CLASSES: Final = frozenset({MARKETING, MARKETING_PAID})

EMAIL: Final = "email"
SMS: Final = "sms"
CHANNELS: Final = (EMAIL, SMS)

OPTED_IN: Final = "opted_in"
OPTED_OUT: Final = "opted_out"
CONSENT_STATUSES: Final = (OPTED_IN, OPTED_OUT)
CONSENT_SOURCES: Final = (
    "import",
    "form",
    "api",
    "unsubscribe_link",
    "staff",
    "delivery",
    "complaint",  # a spam report (ARF) about a message we sent
)

HARD_BOUNCE: Final = "hard_bounce"
SPAM_COMPLAINT: Final = "spam_complaint"
MANUAL: Final = "manual"
UNSUBSCRIBE_ALL: Final = "unsubscribe_all"
SUPPRESSION_REASONS: Final = (HARD_BOUNCE, SPAM_COMPLAINT, MANUAL, UNSUBSCRIBE_ALL)

# Purpose codes an authorization may cover (164.508(c)(1)(iv): "each purpose").
PURPOSE_MARKETING: Final = "marketing"
PURPOSE_CODES: Final = ("marketing", "sale_of_phi", "research", "disclosure", "other")

# The covered entity itself, as a sender id. Third parties use their own ids.
SELF_SENDER: Final = "self"

# Later than any real time: "not signed" starts here, "no end" ends here.
NEVER: Final = datetime.max.replace(tzinfo=UTC)

TOPIC_MAX = 64
_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def valid_topic(topic: str) -> bool:
    """Topics are short slugs (`newsletter`, `refill-reminders`): they appear in pages
    and headers, so they must not be free text."""
    return 0 < len(topic) <= TOPIC_MAX and all(c in _TOPIC_CHARS for c in topic)


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """One consent statement: effective from `at` until a later one for the same key."""

    status: str  # opted_in | opted_out
    at: datetime


@dataclass(frozen=True, slots=True)
class AuthorizationState:
    """The non-PHI structure of a stored authorization: enough for the gate, no decryption.

    `complete` is False only for a record whose required elements are not all present
    (never saved by carepost itself, but the gate fails closed on it anyway).
    """

    id: str
    purposes: frozenset[str]
    recipients: frozenset[str]  # sender ids that may receive / send under it
    signed_at: datetime | None
    expires_at: datetime | None = None
    expiry_event_at: datetime | None = None  # when the expiry event was recorded
    revoked_at: datetime | None = None
    remuneration_statement: bool = False
    complete: bool = True
    # Derived once, so the gate's hot loop compares two times instead of five:
    # valid in [valid_from, valid_until) for marketing when `covers_marketing`.
    valid_from: datetime = field(init=False, compare=False, repr=False)
    valid_until: datetime = field(init=False, compare=False, repr=False)
    covers_marketing: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        ends = [t for t in (self.expires_at, self.expiry_event_at, self.revoked_at) if t]
        object.__setattr__(self, "valid_from", self.signed_at or NEVER)
        object.__setattr__(self, "valid_until", min(ends) if ends else NEVER)
        object.__setattr__(
            self, "covers_marketing", self.complete and PURPOSE_MARKETING in self.purposes
        )


@dataclass(frozen=True, slots=True)
class SuppressionState:
    channel: str
    reason: str
    at: datetime
    removed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ContactState:
    contact_id: str
    # (channel, topic) -> statements oldest first; the latest at or before `at` counts.
    consents: Mapping[tuple[str, str], tuple[ConsentEvent, ...]] = field(default_factory=dict)
    authorizations: tuple[AuthorizationState, ...] = ()
    suppressions: tuple[SuppressionState, ...] = ()
