"""Sealing and batch upserts of contacts and clinical facts.

Imports go through `ContactWriter`: it resolves existing contacts by blind index, seals
new and changed records under each contact's data key, and writes with executemany in
the caller's transaction. It never decrypts a record: an imported row is the contact's
full current state from its source, compared with the stored one by keyed fingerprint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from carepost.contacts.models import ClinicalFact, Contact, ContactKey, ContactLookup
from carepost.contacts.record import Record, canonical
from carepost.crypto.blind_index import blind_index, record_fingerprint
from carepost.crypto.envelope import aad, new_dek, open_sealed, seal, unwrap_dek, wrap_dek
from carepost.crypto.keyring import KeyRing
from carepost.crypto.nonces import random_bytes
from carepost.db import bulk_insert, driver_value

DEK_VERSION = 1
T = TypeVar("T")
LOOKUP_KINDS = ("source", "email", "phone", "mrn")
CONTACT_COLUMNS = ("id", "created_at", "updated_at", "source", "phi_fingerprint", "phi")
KEY_COLUMNS = ("contact_id", "dek_version", "kek_version", "wrapped_dek")
LOOKUP_COLUMNS = ("kind", "value_bi", "contact_id")
FACT_COLUMNS = (
    "id",
    "contact_id",
    "kind",
    "source_bi",
    "fingerprint",
    "created_at",
    "updated_at",
    "payload",
)


_last_tick = 0


def new_id() -> str:
    """32 hex characters: a strictly increasing microsecond tick, then 72 random bits.

    Time-ordered ids append to the primary-key B-trees instead of splitting random pages,
    which makes bulk inserts several times cheaper; the random tail keeps them unguessable
    across processes.
    """
    global _last_tick
    tick = max(time.time_ns() // 1000, _last_tick + 1)
    _last_tick = tick
    return f"{tick:014x}{random_bytes(9).hex()}"


def contact_aad(contact_id: str, dek_version: int) -> bytes:
    return aad("contacts", "phi", contact_id, dek_version)


def fact_aad(fact_id: str, dek_version: int) -> bytes:
    return aad("clinical_facts", "payload", fact_id, dek_version)


@dataclass
class Prepared:
    """What the writer derives from an input before touching the database. Computing it
    is pure, so an importer may do it in another process while the writer writes."""

    # Canonical record bytes, sealed by the writer and never stored as they are. Empty when
    # `sealed_new` carries the record: see `plain_bytes`.
    plain: bytes
    fingerprint: str
    source_bi: str | None
    email_bi: str | None
    lookup_bis: list[tuple[str, str]]  # (kind, blind index)
    # Sealed ahead as a new contact: (id, KEK version, wrapped data key, sealed record).
    # Used when the contact turns out to be new; an existing one is sealed under its own key.
    sealed_new: tuple[str, int, bytes, bytes] | None = None

    def plain_bytes(self, ring: KeyRing) -> bytes:
        """The record bytes, opened from the ahead-sealed form when they were not kept
        (the import's own input, sealed by this import a moment ago)."""
        if self.plain or self.sealed_new is None:
            return self.plain
        cid, kek_version, wrapped, sealed = self.sealed_new
        dek = unwrap_dek(ring, wrapped, kek_version, cid)
        return open_sealed(AESGCM(dek), sealed, contact_aad(cid, DEK_VERSION))


@dataclass
class ContactInput:
    """One contact as an importer read it. `lookups` holds (kind, normalized value)."""

    source_key: str | None
    record: Record
    lookups: list[tuple[str, str]]
    resource_type: str = "Contact"
    origin: str = ""  # where it came from (file:line), for reports; never PHI
    prepared: Prepared | None = None


def prepare(ring: KeyRing, item: ContactInput, *, seal_as_new: bool = False) -> Prepared:
    plain = canonical(item.record)
    # dict.fromkeys: a value given twice ("a@x; a@x") is one lookup row.
    lookup_bis = list(dict.fromkeys((k, blind_index(ring, k, v)) for k, v in item.lookups))
    email_bi = next((bi for kind, bi in lookup_bis if kind == "email"), None)
    sealed_new = None
    if seal_as_new:
        cid = new_id()
        dek = new_dek()
        kek_version, wrapped = wrap_dek(ring, dek, cid)
        sealed_new = (
            cid,
            kek_version,
            wrapped,
            seal(AESGCM(dek), plain, contact_aad(cid, DEK_VERSION)),
        )
    return Prepared(
        plain,
        record_fingerprint(ring, plain),
        blind_index(ring, "source", item.source_key) if item.source_key else None,
        email_bi,
        lookup_bis,
        sealed_new,
    )


@dataclass
class FactInput:
    contact_id: str
    kind: str
    source_key: str
    payload: Record
    resource_type: str


@dataclass
class Outcome:
    """What happened to each input: created, updated, unchanged or skipped(reason)."""

    status: str
    contact_id: str | None = None
    reason: str = ""


@dataclass
class Counts:
    by_type: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, resource_type: str, status: str, n: int = 1) -> None:
        row = self.by_type.setdefault(
            resource_type, {"created": 0, "updated": 0, "unchanged": 0, "skipped": 0}
        )
        row[status] = row.get(status, 0) + n

    def total(self, status: str) -> int:
        return sum(row.get(status, 0) for row in self.by_type.values())


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ContactWriter:
    def __init__(
        self,
        session: Session,
        ring: KeyRing,
        *,
        now: datetime,
        source: str,
        batch_size: int = 2000,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.session = session
        self.ring = ring
        self.now = now
        self.source = source
        self.batch_size = batch_size
        self.progress = progress or (lambda _n: None)
        self.counts = Counts()
        self._deks: dict[str, tuple[int, AESGCM]] = {}

    # --- keys ----------------------------------------------------------------------------
    def _cipher_for(self, contact_ids: Iterable[str]) -> None:
        missing = [c for c in contact_ids if c not in self._deks]
        for chunk in _chunks(missing, self.batch_size):
            rows = self.session.execute(
                select(
                    ContactKey.contact_id,
                    ContactKey.dek_version,
                    ContactKey.kek_version,
                    ContactKey.wrapped_dek,
                ).where(ContactKey.contact_id.in_(chunk))
            )
            for cid, dek_version, kek_version, wrapped in rows:
                dek = unwrap_dek(self.ring, bytes(wrapped), kek_version, cid)
                self._deks[cid] = (dek_version, AESGCM(dek))

    def cipher(self, contact_id: str) -> tuple[int, AESGCM]:
        if contact_id not in self._deks:
            self._cipher_for([contact_id])
        return self._deks[contact_id]

    # --- lookups -------------------------------------------------------------------------
    def resolve(self, kind: str, values_bi: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for chunk in _chunks(list(set(values_bi)), self.batch_size):
            rows = self.session.execute(
                select(ContactLookup.value_bi, ContactLookup.contact_id).where(
                    ContactLookup.kind == kind, ContactLookup.value_bi.in_(chunk)
                )
            )
            for value_bi, cid in rows:
                found.setdefault(value_bi, []).append(cid)
        return found

    def source_bi(self, source_key: str) -> str:
        return blind_index(self.ring, "source", source_key)

    # --- contacts ------------------------------------------------------------------------
    def upsert_contacts(self, inputs: Sequence[ContactInput]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for chunk in _chunks(inputs, self.batch_size):
            outcomes.extend(self._upsert_chunk(chunk))
            self.progress(len(chunk))
        return outcomes

    def _upsert_chunk(self, chunk: Sequence[ContactInput]) -> list[Outcome]:
        ring = self.ring
        prepared = [item.prepared or prepare(ring, item) for item in chunk]
        src_bis = [p.source_bi for p in prepared]
        email_bis = [p.email_bi for p in prepared]
        by_source = self.resolve("source", [b for b in src_bis if b])
        by_email = self.resolve(
            "email", [e for e, s in zip(email_bis, src_bis, strict=True) if e and not s]
        )

        outcomes: list[Outcome] = []
        targets: list[str | None] = []
        claimed: dict[str, int] = {}  # a contact claimed twice in one batch: last one wins
        for idx, (sbi, ebi) in enumerate(zip(src_bis, email_bis, strict=True)):
            existing: list[str] = []
            if sbi:
                existing = by_source.get(sbi, [])
            elif ebi:
                existing = by_email.get(ebi, [])
                if len(existing) > 1:
                    outcomes.append(
                        Outcome(
                            "skipped",
                            None,
                            "email matches more than one contact; give the row a source identifier",
                        )
                    )
                    targets.append(None)
                    continue
            target = existing[0] if existing else None
            key = target or (f"new:s:{sbi}" if sbi else (f"new:e:{ebi}" if ebi else None))
            if key is not None and key in claimed:
                # Same person twice in one file: keep the later row, like a sequential upsert.
                prev = claimed[key]
                outcomes[prev] = Outcome("unchanged", None, "superseded by a later row")
                targets[prev] = None
            if key is not None:
                claimed[key] = idx
            outcomes.append(Outcome("pending", target))
            targets.append(target)

        existing_ids = [t for t in targets if t]
        fingerprints: dict[str, str] = {}
        for ids in _chunks(existing_ids, self.batch_size):
            for cid, fp in self.session.execute(
                select(Contact.id, Contact.phi_fingerprint).where(Contact.id.in_(ids))
            ):
                fingerprints[cid] = fp
        self._cipher_for(existing_ids)

        now = self.now
        now_db = driver_value(self.session, Contact.__table__.c.created_at, now)
        new_contacts: list[tuple[object, ...]] = []
        new_keys: list[tuple[object, ...]] = []
        new_lookups: list[tuple[str, str, str]] = []
        updates: list[dict[str, object]] = []
        relookup_ids: list[str] = []
        for idx, outcome in enumerate(outcomes):
            if outcome.status != "pending":
                continue
            prep = prepared[idx]
            fp = prep.fingerprint
            target = targets[idx]
            sbi = src_bis[idx]
            if target is None:
                if prep.sealed_new is not None:
                    cid, kek_version, wrapped, sealed = prep.sealed_new
                else:
                    cid = new_id()
                    dek = new_dek()
                    kek_version, wrapped = wrap_dek(ring, dek, cid)
                    cipher = AESGCM(dek)
                    self._deks[cid] = (DEK_VERSION, cipher)
                    sealed = seal(cipher, prep.plain, contact_aad(cid, DEK_VERSION))
                new_contacts.append((cid, now_db, now_db, self.source, fp, sealed))
                new_keys.append((cid, DEK_VERSION, kek_version, wrapped))
                if sbi:
                    new_lookups.append(("source", sbi, cid))
                new_lookups += [(kind, bi, cid) for kind, bi in prep.lookup_bis]
                outcomes[idx] = Outcome("created", cid)
            elif fingerprints.get(target) == fp:
                outcomes[idx] = Outcome("unchanged", target)
            else:
                dek_version, cipher = self._deks[target]
                updates.append(
                    {
                        "id": target,
                        "updated_at": now,
                        "phi_fingerprint": fp,
                        "phi": seal(
                            cipher, prep.plain_bytes(ring), contact_aad(target, dek_version)
                        ),
                    }
                )
                relookup_ids.append(target)
                new_lookups += [(kind, bi, target) for kind, bi in prep.lookup_bis]
                outcomes[idx] = Outcome("updated", target)

        session = self.session
        bulk_insert(session, Contact.__table__, CONTACT_COLUMNS, new_contacts)
        bulk_insert(session, ContactKey.__table__, KEY_COLUMNS, new_keys)
        if updates:
            session.execute(update(Contact), updates)
        if relookup_ids:
            session.execute(
                delete(ContactLookup).where(
                    ContactLookup.contact_id.in_(relookup_ids), ContactLookup.kind != "source"
                )
            )
        bulk_insert(session, ContactLookup.__table__, LOOKUP_COLUMNS, new_lookups)
        for item, outcome in zip(chunk, outcomes, strict=True):
            self.counts.add(item.resource_type, outcome.status)
        return outcomes

    # --- clinical facts ------------------------------------------------------------------
    def upsert_facts(self, facts: Sequence[FactInput]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for chunk in _chunks(facts, self.batch_size):
            outcomes.extend(self._upsert_fact_chunk(chunk))
            self.progress(len(chunk))
        return outcomes

    def _upsert_fact_chunk(self, chunk: Sequence[FactInput]) -> list[Outcome]:
        ring = self.ring
        now_db = driver_value(self.session, ClinicalFact.__table__.c.created_at, self.now)
        contact_ids = list({f.contact_id for f in chunk})
        self._cipher_for(contact_ids)
        existing: dict[tuple[str, str], tuple[str, str]] = {}
        for ids in _chunks(contact_ids, self.batch_size):
            rows = self.session.execute(
                select(
                    ClinicalFact.contact_id,
                    ClinicalFact.source_bi,
                    ClinicalFact.id,
                    ClinicalFact.fingerprint,
                ).where(ClinicalFact.contact_id.in_(ids))
            )
            for cid, sbi, fid, fp in rows:
                existing[(cid, sbi)] = (fid, fp)
        inserts: list[tuple[object, ...]] = []
        updates: list[dict[str, object]] = []
        outcomes: list[Outcome] = []
        seen: set[tuple[str, str]] = set()
        for fact in chunk:
            sbi = self.source_bi(fact.source_key)
            key = (fact.contact_id, sbi)
            plain = canonical(fact.payload)
            fp = record_fingerprint(ring, plain)
            if key in seen:
                outcomes.append(Outcome("unchanged", fact.contact_id, "repeated in this import"))
                continue
            seen.add(key)
            dek_version, cipher = self._deks[fact.contact_id]
            current = existing.get(key)
            if current is None:
                fid = new_id()
                inserts.append(
                    (
                        fid,
                        fact.contact_id,
                        fact.kind,
                        sbi,
                        fp,
                        now_db,
                        now_db,
                        seal(cipher, plain, fact_aad(fid, dek_version)),
                    )
                )
                outcomes.append(Outcome("created", fact.contact_id))
            elif current[1] == fp:
                outcomes.append(Outcome("unchanged", fact.contact_id))
            else:
                fid = current[0]
                updates.append(
                    {
                        "id": fid,
                        "kind": fact.kind,
                        "fingerprint": fp,
                        "updated_at": self.now,
                        "payload": seal(cipher, plain, fact_aad(fid, dek_version)),
                    }
                )
                outcomes.append(Outcome("updated", fact.contact_id))
        bulk_insert(self.session, ClinicalFact.__table__, FACT_COLUMNS, inserts)
        if updates:
            self.session.execute(update(ClinicalFact), updates)
        for fact, outcome in zip(chunk, outcomes, strict=True):
            self.counts.add(fact.resource_type, outcome.status)
        return outcomes


def open_contact(
    ring: KeyRing,
    contact_id: str,
    phi: bytes,
    dek_version: int,
    kek_version: int,
    wrapped_dek: bytes,
) -> bytes:
    """Decrypt one contact record. Only `carepost.contacts.phi` may call this (audited)."""
    dek = unwrap_dek(ring, wrapped_dek, kek_version, contact_id)
    return open_sealed(AESGCM(dek), phi, contact_aad(contact_id, dek_version))


def open_contact_with(cipher: AESGCM, contact_id: str, phi: bytes, dek_version: int) -> bytes:
    """Decrypt one contact record with its already unwrapped data key (bulk reads)."""
    return open_sealed(cipher, phi, contact_aad(contact_id, dek_version))


def open_fact(cipher: AESGCM, fact_id: str, dek_version: int, payload: bytes) -> bytes:
    return open_sealed(cipher, payload, fact_aad(fact_id, dek_version))
