"""The delivery worker: one batch at a time, three transactions a batch.

1. claim: lease up to `batch_size` due rows (outbox.claim).
2. prepare: in ONE transaction, check the lease is still ours, run the consent gate for
   the batch (consent.service.gate_batch: the state is read under lock, so a revocation
   that committed before is seen, and one that commits after waits), read the allowed
   contacts through the audited bulk door, render, build, sign, archive the exact bytes
   sealed under each contact's key, write the attempt rows (which are also the timeline's
   attempt_started and result: delivery.timeline), and move the rows to
   `attempt_started`. Commit. From
   here on a crash leaves the rows `attempt_started`, which the next claim after the lease
   turns into `unknown` (retried once), never lost.
3. send concurrently through the transport, then record every result in one transaction:
   states, evidence, suppression of hard bounces, alerts, campaign completion.

Nothing per recipient makes its own database round trip.

The signature, the SHA-256 of the bytes and the archive's compression run on helper
threads (`signing_threads`, default 2): they are C calls that release the GIL, and with
the composer at under 200 µs a message one thread signing RSA-2048 fell behind it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from random import Random
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.bounces.verp import ReturnPath, VerpSigner
from carepost.campaigns.models import Campaign, SenderProfile
from carepost.clock import Clock, system_clock
from carepost.consent import service as consent
from carepost.contacts import phi
from carepost.contacts.store import new_id
from carepost.content import mime
from carepost.content.models import Template
from carepost.content.service import spec_of
from carepost.content.template import compile_template
from carepost.content.tokens import TokenSigner
from carepost.crypto.envelope import aad, seal
from carepost.crypto.keyring import KeyRing
from carepost.db import bulk_insert, bulk_update, driver_value, read_only, transaction
from carepost.delivery import archive, dkim, e2e, machine, outbox, route
from carepost.delivery.compose import CampaignKit, Composed, Draft, compose, finish
from carepost.delivery.models import (
    ArchivedMessage,
    DeliveryAlert,
    DeliveryAttempt,
    OutboxMessage,
)
from carepost.delivery.outcome import ALERTS, Outcome
from carepost.delivery.smtp import Attempt, Envelope, TlsPolicy
from carepost.delivery.transport import Transport, send_all
from carepost.messages.service import KIND as ONE_OFF_KIND
from carepost.portal import fallback
from carepost.portal.notice import PortalSender
from carepost.portal.service import Handoff, store_handoffs


@dataclass(frozen=True)
class WorkerConfig:
    batch_size: int = 200
    lease: timedelta = timedelta(minutes=5)
    concurrency: int = 16
    signing_threads: int = 2
    retry: machine.RetryPolicy = field(default_factory=machine.RetryPolicy)
    public_url: str = ""
    track: bool = True
    # Classes the operator declared PHI-free (delivery.route): only they may go without TLS.
    phi_free_classes: frozenset[str] = frozenset()
    # An idle worker looks for one-off messages this often (seconds) instead of sleeping
    # its whole idle interval: a one-off message waits at most this long for a claim.
    express_poll: float = 0.05
    # While one-off messages have come in within `express_window` seconds, a claimed
    # batch is prepared, sent and recorded in parts this big, with a check for one-off
    # messages between parts (run_batch_async); docs/benchmarks.md has the trade.
    sub_batch: int = 250
    express_window: float = 60.0


@dataclass
class BatchReport:
    claimed: int = 0
    denied: int = 0
    no_address: int = 0
    unencryptable: int = 0  # end-to-end required and impossible (delivery/e2e.py)
    handed_off: int = 0
    results: Counter[str] = field(default_factory=Counter)

    def add(self, other: BatchReport) -> None:
        self.claimed += other.claimed
        self.denied += other.denied
        self.no_address += other.no_address
        self.unencryptable += other.unencryptable
        self.handed_off += other.handed_off
        self.results.update(other.results)


@dataclass(frozen=True)
class _Prepared:
    claimed: outbox.Claimed
    composed: Composed
    attempt_no: int
    method: str | None = None  # "smime" | "pgp" when end-to-end encrypted


_Packed = tuple[Composed, bytes]

_FINAL_OUTBOX_COLUMNS = (
    "state",
    "next_attempt_at",
    "lease_owner",
    "lease_until",
    "last_reason",
    "held_back",
    "updated_at",
)
_FINAL_ATTEMPT_COLUMNS = (
    "finished_at",
    "status",
    "reason",
    "code",
    "reply",
    "tls_version",
    "tls_cipher",
    "method",
    "result_state",
    "result_reason",
)


# Drafts handed to a signing thread at a time: one hand-off (a future, a queue put, a
# thread woken) per message cost the composing thread more than the hand-off of a chunk.
SIGN_CHUNK = 16


def _finish_and_pack(drafts: list[Draft], kit: CampaignKit) -> list[_Packed]:
    """On a helper thread: signature, hash and archive compression all release the GIL."""
    packed = []
    for draft in drafts:
        composed = finish(draft, kit.signer)
        packed.append((composed, archive.pack(composed.data)))
    return packed


def _method(p: _Prepared, attempt: Attempt, transport_method: str) -> str:
    """What the evidence names as the delivery method: the portal when the message went
    there instead, else end-to-end encryption when used, else how the transport sent it."""
    if attempt.method == fallback.METHOD:
        return fallback.METHOD
    return p.method or attempt.method or transport_method


def worker_name() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


class Worker:
    def __init__(
        self,
        engine: Any,
        ring: KeyRing,
        transport: Transport,
        config: WorkerConfig,
        *,
        name: str | None = None,
        clock: Clock = system_clock,
        rng: Random | None = None,
        on_handoff: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.ring = ring
        self.transport = transport
        self.config = config
        self.name = name or worker_name()
        self.actor = Actor(f"worker:{self.name}", "worker", socket.gethostname()[:128])
        self.clock = clock
        self.rng = rng or Random()
        self.tokens = TokenSigner(ring)
        self.verp = VerpSigner(ring)
        self._kits: dict[str, CampaignKit] = {}
        # Hidden campaigns of one-off messages (messages/service.py): their rows carry
        # sealed per-message data.
        self._one_off: set[str] = set()
        self._one_off_seen = float("-inf")  # monotonic time of the last one-off batch
        # Journey and one-off campaigns stay open: asking whether they are done would scan
        # every message they ever sent, at every batch.
        self._never_closed: set[str] = set()
        # Per campaign, the return path cut for VERP: a message adds its id and one MAC.
        self._return_paths: dict[str, ReturnPath] = {}
        self._routes: dict[str, tuple[route.Route, fallback.FallbackKit]] = {}
        # One helper thread signs and hashes while the loop builds the next message.
        self._signing = ThreadPoolExecutor(
            max_workers=max(1, config.signing_threads), thread_name_prefix="carepost-sign"
        )
        self._on_handoff = on_handoff  # crash tests kill the process here

    # --- campaign kits ------------------------------------------------------------------
    def _kit(self, session: Session, campaign_id: str) -> CampaignKit:
        kit = self._kits.get(campaign_id)
        if kit is not None:
            return kit
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        template = session.get(Template, campaign.template_id)
        sender = session.get(SenderProfile, campaign.sender_id)
        assert template is not None
        assert sender is not None
        kit = build_kit(campaign, template, sender, self.config)
        decided = route.decide(
            message_class=campaign.message_class,
            phi_fields=template.phi_fields.split(),
            secure_delivery=template.secure_delivery,
            tls_fallback=sender.tls_fallback,
            portal_verification=sender.portal_verification,
            phi_free=self.config.phi_free_classes,
            portal_available=bool(self.config.public_url),
        )
        portal_kit = fallback.FallbackKit(
            PortalSender(
                sender.from_name,
                sender.from_address,
                sender.return_path,
                sender.organization_name,
                kit.signer,
            ),
            sender.id,
            self.config.public_url,
            decided.verification,
        )
        self._routes[campaign_id] = (decided, portal_kit)
        if campaign.kind == ONE_OFF_KIND:
            self._one_off.add(campaign_id)
        if campaign.kind != "campaign":
            self._never_closed.add(campaign_id)
        self._kits[campaign_id] = kit
        self._return_paths[campaign_id] = self.verp.return_path(kit.return_path)
        return kit

    # --- one batch ----------------------------------------------------------------------
    def run_batch(self) -> BatchReport:
        """One batch in its own event loop (tests and one-shot commands)."""

        async def once() -> BatchReport:
            try:
                return await self.run_batch_async()
            finally:
                await self.transport.close()

        return asyncio.run(once())

    async def run_batch_async(self, lane: int | None = None) -> BatchReport:
        """Claim a batch and prepare, send and record it. While one-off messages have been
        coming in (within `express_window`), the batch is handled in parts of `sub_batch`
        rows and a one-off message that arrived meanwhile goes between two parts, as its
        own small batch: it waits for one part, not for the whole batch (and on SQLite the
        API's insert waits for one part's write transaction). Parts cost the campaign some
        throughput (docs/benchmarks.md), so a campaign alone is handled whole."""
        report = BatchReport()
        with transaction(self.engine) as session:
            claimed = outbox.claim(
                session,
                worker=self.name,
                at=self.clock(),
                limit=self.config.batch_size,
                lease=self.config.lease,
                policy=self.config.retry,
                lane=lane,
            )
        report.claimed = len(claimed)
        if claimed and claimed[0].lane == outbox.LANE_ONE_OFF:
            self._one_off_seen = time.monotonic()
        express = time.monotonic() - self._one_off_seen < self.config.express_window
        step = max(1, self.config.sub_batch) if express else max(1, len(claimed))
        for start in range(0, len(claimed), step):
            if start and lane is None and self._one_off_due():
                report.add(await self.run_batch_async(lane=outbox.LANE_ONE_OFF))
            await self._handle(claimed[start : start + step], report)
        return report

    def _one_off_due(self) -> bool:
        with read_only(self.engine) as conn:
            return outbox.lane_due(conn, lane=outbox.LANE_ONE_OFF, at=self.clock())

    async def _handle(self, claimed: list[outbox.Claimed], report: BatchReport) -> None:
        # The gate run's and the PHI read's audit entries are linked at the end of the
        # transaction: the chain's head lock is then held for the commit, not for the
        # whole compose, and other workers' prepares run alongside this one.
        with transaction(self.engine) as session, audit.appended_at_end(session):
            prepared = self._prepare(session, claimed, report)
        if not prepared:
            return
        if self._on_handoff is not None:
            self._on_handoff()
        attempts, handoffs = await self._send_all(prepared)
        with transaction(self.engine) as session:
            self._record(session, prepared, attempts, report)
            store_handoffs(session, handoffs, actor=self.actor, at=self.clock())

    def run(
        self,
        *,
        until_idle: bool = True,
        idle_sleep: float = 1.0,
        stop: Callable[[], bool] | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> BatchReport:
        """Batches until the queue is empty (or, with until_idle False, until `stop`).
        One event loop for the whole run, so pooled SMTP connections outlive a batch.
        `on_batch` sees each batch's report as it ends (progress display)."""

        async def loop() -> BatchReport:
            total = BatchReport()
            try:
                while not (stop and stop()):
                    report = await self.run_batch_async()
                    total.add(report)
                    if on_batch is not None:
                        on_batch(report)
                    if report.claimed == 0:
                        if until_idle:
                            break
                        await self._idle(idle_sleep)
            finally:
                await self.transport.close()
            return total

        return asyncio.run(loop())

    async def _idle(self, seconds: float) -> None:
        """Sleep `seconds`, but return as soon as a one-off message is due (an indexed
        probe every `express_poll`): campaigns can wait a second, a lab-result notice
        should not. Another process's one-off message is seen the same way."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, self.config.express_poll))
            with read_only(self.engine) as conn:
                if outbox.lane_due(conn, lane=outbox.LANE_ONE_OFF, at=self.clock()):
                    return

    def _prepare(
        self, session: Session, claimed: list[outbox.Claimed], report: BatchReport
    ) -> list[_Prepared]:
        at = self.clock()
        held = outbox.still_leased(session, [c.id for c in claimed], worker=self.name, at=at)
        by_campaign: dict[str, list[outbox.Claimed]] = defaultdict(list)
        for c in claimed:
            if c.id in held and c.campaign_id is not None:
                by_campaign[c.campaign_id].append(c)
        prepared: list[_Prepared] = []
        # Chunks of messages on the signing threads: (row, attempt, contact, method) each,
        # and the future of their signed, packed bytes.
        pending: list[
            tuple[
                list[tuple[outbox.Claimed, int, phi.OpenedContact, str | None]],
                Future[list[_Packed]],
            ]
        ] = []
        denied: list[outbox.Claimed] = []
        no_address: list[outbox.Claimed] = []
        # End-to-end: rows that must not go (no key of the required kind; key refused).
        unencryptable: dict[str, list[outbox.Claimed]] = defaultdict(list)
        archive_rows: list[tuple[object, ...]] = []
        attempt_rows: list[tuple[object, ...]] = []
        at_value = driver_value(session, DeliveryAttempt.__table__.c.started_at, at)
        for campaign_id, rows in by_campaign.items():
            kit = self._kit(session, campaign_id)
            decided = consent.gate_batch(
                session,
                campaign_id=campaign_id,
                contact_ids=[r.contact_id for r in rows],
                message_class=kit.message_class,
                channel=kit.channel,
                topic=kit.topic,
                sender=kit.sender_id,
                actor=self.actor,
                clock=lambda: at,
            )
            allowed = [r for r in rows if decided.decisions[r.contact_id].allowed]
            denied += [r for r in rows if not decided.decisions[r.contact_id].allowed]
            one_off = campaign_id in self._one_off
            details: dict[str, object] = {"campaign_id": campaign_id, "gate_run": decided.run_id}
            if one_off:
                details["message_data"] = [r.id for r in allowed]
            opened = phi.read_for_job(
                session,
                self.ring,
                sorted({r.contact_id for r in allowed}),
                actor=self.actor,
                purpose=f"deliver campaign {campaign_id}",
                action="delivery.phi_read",
                with_facts=kit.needs_facts,
                with_keys=kit.e2e_mode != e2e.OFF,
                details=details,
                clock=lambda: at,
            )
            data = (
                phi.open_message_data(session, opened, [(r.id, r.contact_id) for r in allowed])
                if one_off
                else {}
            )
            chunk: list[tuple[outbox.Claimed, int, phi.OpenedContact, str | None]] = []
            drafts: list[Draft] = []
            for row in allowed:
                contact = opened.get(row.contact_id)
                choice = (
                    e2e.choose(kit.e2e_mode, contact.keys, at)
                    if contact is not None and kit.e2e_mode != e2e.OFF
                    else e2e.PLAIN
                )
                if choice.reason is not None:
                    unencryptable[choice.reason].append(row)
                    continue
                try:
                    draft = (
                        compose(
                            kit,
                            self.ring,
                            self.tokens,
                            row.id,
                            row.contact_id,
                            contact.record,
                            contact.facts,
                            at,
                            choice.key,
                            data.get(row.id),
                        )
                        if contact is not None
                        else None
                    )
                except e2e.E2eError:
                    unencryptable[e2e.ENCRYPT_FAILED].append(row)
                    continue
                if draft is None or contact is None:
                    no_address.append(row)
                    continue
                chunk.append((row, row.attempts + 1, contact, choice.method))
                drafts.append(draft)
                if len(drafts) >= SIGN_CHUNK:
                    pending.append((chunk, self._signing.submit(_finish_and_pack, drafts, kit)))
                    chunk, drafts = [], []
            if drafts:
                pending.append((chunk, self._signing.submit(_finish_and_pack, drafts, kit)))
        for (row, attempt_no, contact, method), (composed, packed) in (
            (item, done)
            for items, future in pending
            for item, done in zip(items, future.result(), strict=True)
        ):
            prepared.append(_Prepared(row, composed, attempt_no, method))
            archive_rows.append(
                (
                    row.id,
                    attempt_no,
                    contact.dek_version,
                    archive.CODEC,
                    seal(
                        contact.cipher,
                        packed,
                        aad(
                            "message_archive", "body", f"{row.id}.{attempt_no}", contact.dek_version
                        ),
                    ),
                )
            )
            attempt_rows.append(
                (
                    row.id,
                    attempt_no,
                    self.transport.name,
                    method or self.transport.method,
                    composed.message_id,
                    composed.sha256,
                    len(composed.data),
                    composed.dkim,
                    at_value,
                    composed.rcpt.rpartition("@")[2].lower(),
                    row.claim_seq,
                )
            )
        self._finish_without_send(session, denied, "denied", "gate_denied", at)
        self._finish_without_send(session, no_address, "failed", "no_address", at)
        for reason, rows_failed in unencryptable.items():
            self._finish_without_send(session, rows_failed, "failed", reason, at)
            report.unencryptable += len(rows_failed)
        report.denied += len(denied)
        report.no_address += len(no_address)
        if prepared:
            bulk_update(
                session,
                OutboxMessage.__table__,
                ("state", "attempts", "unknown_retries", "updated_at"),
                ("id",),
                [
                    (
                        "attempt_started",
                        p.attempt_no,
                        p.claimed.unknown_retries + (1 if p.claimed.spends_unknown_retry else 0),
                        at,
                        p.claimed.id,
                    )
                    for p in prepared
                ],
            )
            # No attempt_started transitions: the attempt row below is that record
            # (its started_at and claim_seq; delivery.timeline).
            bulk_insert(
                session,
                DeliveryAttempt.__table__,
                (
                    "outbox_id",
                    "attempt",
                    "transport",
                    "method",
                    "message_id",
                    "sha256",
                    "size",
                    "dkim",
                    "started_at",
                    "recipient_domain",
                    "claim_seq",
                ),
                attempt_rows,
            )
            bulk_insert(
                session,
                ArchivedMessage.__table__,
                ("outbox_id", "attempt", "dek_version", "codec", "body"),
                archive_rows,
            )
        report.handed_off += len(prepared)
        # A batch of only denied or address-less rows may be a campaign's last.
        self._close_finished_campaigns(session, set(by_campaign), at)
        return prepared

    def _finish_without_send(
        self,
        session: Session,
        rows: Sequence[outbox.Claimed],
        state: str,
        reason: str,
        at: datetime,
    ) -> None:
        if not rows:
            return
        session.execute(
            update(OutboxMessage),
            [
                {
                    "id": r.id,
                    "state": state,
                    "next_attempt_at": None,
                    "lease_owner": None,
                    "lease_until": None,
                    "last_reason": reason,
                    "updated_at": at,
                }
                for r in rows
            ],
        )
        outbox.transition(session, [(r.id, state, reason) for r in rows], at)

    async def _send_all(self, prepared: Sequence[_Prepared]) -> tuple[list[Attempt], list[Handoff]]:
        """Every message by its route (delivery.route): the ones that go by mail through
        the transport together (`transport.send_all`: the relay streams them), then, for
        those the route sends to the portal and those whose recipient's server could not
        do the TLS they require, the portal or a failure, `concurrency` at a time. All of
        it before the batch records."""
        attempts: list[Attempt | None] = [None] * len(prepared)
        by_mail: list[int] = []
        envelopes: list[Envelope] = []
        to_portal: list[tuple[int, str]] = []
        for i, p in enumerate(prepared):
            decided, _ = self._routes[p.claimed.campaign_id or ""]
            # An end-to-end encrypted message carries its real subject inside the
            # encryption (delivery.e2e), so even a secure_delivery message may go by mail.
            encrypted = p.method is not None
            if decided.refused is not None and not encrypted:
                attempts[i] = Attempt(Outcome("failed", decided.refused, "connect"))
            elif not decided.portal_only or encrypted:
                by_mail.append(i)
                envelopes.append(self._envelope(p, decided.tls))
            else:
                to_portal.append((i, route.SECURE_DELIVERY))
        sent = await send_all(self.transport, envelopes, self.config.concurrency)
        for i, attempt in zip(by_mail, sent, strict=True):
            if not attempt.outcome.recipient_tls_failure:
                attempts[i] = attempt
                continue
            decided, _ = self._routes[prepared[i].claimed.campaign_id or ""]
            if decided.on_tls_failure == "fail":
                # The sender profile wants no portal: final, since retrying will not give
                # the recipient's server the TLS it lacks.
                failed = Outcome("failed", attempt.outcome.reason, attempt.outcome.phase)
                attempts[i] = Attempt(
                    failed, attempt.reply, attempt.tls_version, attempt.tls_cipher, attempt.method
                )
            else:
                to_portal.append((i, attempt.outcome.reason))
        handoffs: list[Handoff] = []
        queue = iter(to_portal)

        async def porter() -> None:
            for i, reason in queue:
                attempts[i], handoff = await self._to_portal(prepared[i], reason)
                if handoff is not None:
                    handoffs.append(handoff)

        await asyncio.gather(
            *(porter() for _ in range(min(self.config.concurrency, len(to_portal))))
        )
        return [a for a in attempts if a is not None], handoffs

    def _envelope(self, p: _Prepared, tls: TlsPolicy) -> Envelope:
        # VERP: bounces come back to an address naming this outbox row.
        campaign_id = p.claimed.campaign_id or ""
        mail_from = self.verp.address(self._return_paths[campaign_id], p.claimed.id)
        return Envelope(mail_from, p.composed.rcpt, p.composed.data, crlf_clean=True, tls=tls)

    async def _to_portal(self, p: _Prepared, reason: str) -> tuple[Attempt, Handoff | None]:
        """The message put in the portal, with a notice sent by mail in its place."""
        _, portal_kit = self._routes[p.claimed.campaign_id or ""]
        return await fallback.to_portal(
            self.transport,
            self.ring,
            portal_kit,
            outbox_id=p.claimed.id,
            attempt=p.attempt_no,
            contact_id=p.claimed.contact_id,
            rcpt=p.composed.rcpt,
            reason=reason,
            at=self.clock(),
        )

    def _record(
        self,
        session: Session,
        prepared: Sequence[_Prepared],
        attempts: Sequence[Attempt],
        report: BatchReport,
    ) -> None:
        at = self.clock()
        outbox_params = []
        attempt_params = []
        alerts: Counter[str] = Counter()
        hard_bounces: list[tuple[str, str, str]] = []
        for p, attempt in zip(prepared, attempts, strict=True):
            outcome: Outcome = attempt.outcome
            nxt = machine.after_attempt(
                outcome,
                attempts=p.attempt_no,
                unknown_retries=p.claimed.unknown_retries
                + (1 if p.claimed.spends_unknown_retry else 0),
                at=at,
                policy=self.config.retry,
                rng=self.rng,
                held_back=p.claimed.held_back,
            )
            report.results[nxt.state] += 1
            outbox_params.append(
                (
                    nxt.state,
                    nxt.next_attempt_at,
                    None,
                    None,
                    nxt.reason,
                    p.claimed.held_back + nxt.held_back,
                    at,
                    p.claimed.id,
                )
            )
            attempt_params.append(
                (
                    at,
                    outcome.status,
                    outcome.reason,
                    outcome.code,
                    attempt.reply or None,
                    attempt.tls_version,
                    attempt.tls_cipher,
                    _method(p, attempt, self.transport.method),
                    nxt.state,
                    nxt.reason,
                    p.claimed.id,
                    p.attempt_no,
                )
            )
            if outcome.alert is not None:
                alerts[outcome.reason] += 1
            if outcome.bounce == "hard":
                hard_bounces.append((p.claimed.contact_id, p.composed.rcpt, p.claimed.id))
        bulk_update(
            session,
            OutboxMessage.__table__,
            _FINAL_OUTBOX_COLUMNS,
            ("id",),
            outbox_params,
        )
        bulk_update(
            session,
            DeliveryAttempt.__table__,
            _FINAL_ATTEMPT_COLUMNS,
            ("outbox_id", "attempt"),
            attempt_params,
        )
        # The results are not outbox_transitions rows: the attempt rows just updated
        # hold them (result_state, result_reason, finished_at; delivery.timeline).
        for kind, count in alerts.items():
            session.add(
                DeliveryAlert(
                    id=new_id(),
                    at=at,
                    kind=kind,
                    count=count,
                    detail=ALERTS[kind],
                )
            )
        for contact_id, rcpt, outbox_id in hard_bounces:
            consent.add_suppression(
                session,
                channel="email",
                address_bis=[consent.address_bi(self.ring, "email", rcpt)],
                reason="hard_bounce",
                source="delivery",
                evidence_ref=f"outbox:{outbox_id}",
                contact_id=contact_id,
                actor=self.actor,
                clock=lambda: at,
            )
        self._close_finished_campaigns(session, {p.claimed.campaign_id for p in prepared}, at)

    def _close_finished_campaigns(
        self, session: Session, campaign_ids: set[str] | set[str | None], at: datetime
    ) -> None:
        for campaign_id in campaign_ids:
            if campaign_id is None or campaign_id in self._never_closed:
                continue
            pending = session.scalar(
                select(
                    exists().where(
                        OutboxMessage.campaign_id == campaign_id,
                        OutboxMessage.state.not_in(machine.FINAL_STATES),
                        OutboxMessage.next_attempt_at.is_not(None)
                        | OutboxMessage.state.in_(("claimed", "attempt_started")),
                    )
                )
            )
            if not pending:
                session.execute(
                    update(Campaign)
                    .where(
                        Campaign.id == campaign_id,
                        Campaign.status == "running",
                        # A journey's send step keeps its campaign open for later sends.
                        Campaign.kind == "campaign",
                    )
                    .values(status="done", finished_at=at)
                )


def build_kit(
    campaign: Campaign, template: Template, sender: SenderProfile, config: WorkerConfig
) -> CampaignKit:
    spec = spec_of(template)
    signer = None
    if sender.dkim_domain and sender.dkim_selector and sender.dkim_key_file:
        from pathlib import Path

        key = dkim.load_private_key(Path(sender.dkim_key_file))
        signer = dkim.DkimSigner(sender.dkim_domain, sender.dkim_selector, key)
    fixed = mime.header_line("From", mime.format_address(sender.from_name, sender.from_address))
    if sender.reply_to:
        fixed += mime.header_line("Reply-To", sender.reply_to)
    return CampaignKit(
        campaign_id=campaign.id,
        campaign_name=campaign.name,
        message_class=campaign.message_class,
        channel=campaign.channel,
        topic=campaign.topic,
        sender_id=sender.id,
        from_address=sender.from_address,
        return_path=sender.return_path,
        postal_address=sender.postal_address,
        organization_name=sender.organization_name,
        sender_name=sender.from_name,
        message_id_domain=sender.from_address.rsplit("@", 1)[1],
        template=compile_template(spec),
        layout=mime.MimeLayout.alternative(),
        fixed_headers=fixed,
        signer=signer,
        public_url=config.public_url,
        track=config.track,
        e2e_mode=sender.e2e,
    )
