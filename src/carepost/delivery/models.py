"""The outbox and what each message leaves behind.

One outbox row per recipient and message. Its id is the message's identity everywhere:
the Message-ID's local part, the tracking tokens, the evidence. States (DESIGN rule 6):

    queued -> claimed (lease) -> attempt_started (committed before DATA)
           -> sent | deferred (retry at next_attempt_at) | failed | unknown | denied

`denied` is the consent gate's answer at send time; the reason codes live in
gate_decisions. Nothing here is PHI: ids, states, times, codes, hashes.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from carepost.db import Base, UTCDateTime
from carepost.delivery.machine import DUE_STATES

# The rows a claim may take, as the partial index `ix_outbox_ready` and the claim's own
# WHERE both spell it: a planner uses a partial index only for a query whose condition
# it can see implies the index's, and SQLite only for the same term, literals included.
READY = "state IN (" + ", ".join(f"'{s}'" for s in DUE_STATES) + ")"


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "state", "lane", "next_attempt_at"),
        # The claim's order over due rows only: a claim reads its batch off the front of
        # this index instead of sorting every due row of every campaign (a claim of 500
        # with 200,000 queued on PostgreSQL: 35 against 342 ms, docs/benchmarks.md). The
        # hot path's state changes go to states outside it, so they add no entries.
        Index(
            "ix_outbox_ready",
            "lane",
            "next_attempt_at",
            "id",
            postgresql_where=text(READY),
            sqlite_where=text(READY),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    campaign_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("campaigns.id"), nullable=True, index=True
    )
    contact_id: Mapped[str] = mapped_column(String(32), ForeignKey("contacts.id"), index=True)
    lane: Mapped[int] = mapped_column(Integer)  # 0: one-off messages first, 1: campaigns
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    unknown_retries: Mapped[int] = mapped_column(Integer)
    # Attempts that carepost's own limits (warm-up cap, domain rate) stopped before any
    # connection: they do not count against the retry budget (delivery.machine).
    held_back: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxTransition(Base):
    """A state change with its time, outside a sending attempt (queued, claimed, denied,
    lease expired, ...). An attempt's start and result are its `delivery_attempts` row;
    delivery.timeline reads the two as the evidence report's timeline."""

    __tablename__ = "outbox_transitions"

    outbox_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("outbox.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    detail: Mapped[str | None] = mapped_column(String(64), nullable=True)


class DeliveryAttempt(Base):
    """Evidence of one handoff: exact bytes (by SHA-256), signature, the relay's reply
    (recipient address removed) and the TLS it went over."""

    __tablename__ = "delivery_attempts"

    outbox_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("outbox.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    transport: Mapped[str] = mapped_column(String(16))
    # tls_relay | capture | null | tls_direct | tls_direct_unverified | plain_direct
    method: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str] = mapped_column(String(254))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    dkim: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reply: Mapped[str | None] = mapped_column(String(512), nullable=True)
    tls_version: Mapped[str | None] = mapped_column(String(16), nullable=True)
    tls_cipher: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The recipient's domain (never the address): per-domain reports and bounce rates.
    recipient_domain: Mapped[str | None] = mapped_column(String(253), nullable=True)
    # The attempt is its message's timeline from claim to result (delivery.timeline): the
    # seq of the `claimed` transition it follows, and the state and reason the outbox row
    # took when it finished. Rows from before migration 0019 have none of the three; their
    # attempt_started and result are outbox_transitions rows.
    claim_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    result_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)


class ArchivedMessage(Base):
    """The exact bytes sent, sealed under the contact's data key (AAD
    `message_archive|body|outbox id|dek version`): shredding the contact shreds these."""

    __tablename__ = "message_archive"

    outbox_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("outbox.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    dek_version: Mapped[int] = mapped_column(Integer)
    # How `body` was packed before sealing (delivery.archive.CODEC for what workers write
    # now, "raw" for rows from before revision 0005): a campaign of 26 KB messages
    # archives at about a fifth of its size.
    codec: Mapped[str] = mapped_column(String(8), server_default="raw")
    body: Mapped[bytes] = mapped_column(LargeBinary)


class DeliveryAlert(Base):
    """Something an operator must hear of, e.g. a relay without TLS (nothing was sent)."""

    __tablename__ = "delivery_alerts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(256))
    count: Mapped[int] = mapped_column(Integer)


class WarmupCount(Base):
    """Messages a warming-up sending IP was allowed per UTC day (delivery.warmup). Shared
    by every worker process: each reserves blocks of the day's cap here."""

    __tablename__ = "delivery_warmup"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)  # sending IP label
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    reserved: Mapped[int] = mapped_column(Integer)


class MtaStsPolicyCache(Base):
    """The last valid MTA-STS policy fetched per recipient domain (RFC 8461 section 5),
    shared by every worker and kept across restarts: a cached policy is what protects a
    domain when an attacker strips its TXT record or blocks the policy fetch, so it must
    not vanish when a process does. Public data, no PHI."""

    __tablename__ = "mta_sts_policies"

    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    policy_id: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(8))
    mx: Mapped[str] = mapped_column(Text)  # patterns, one per line
    max_age: Mapped[int] = mapped_column(Integer)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
