"""Contact data for one batch of journey steps: branch rules over contact attributes and
facts (the segment language, evaluated by the segment evaluator on a snapshot of just
these contacts), and update_contact's writes.

Reading goes through the one door (contacts/phi.py `read_for_job`: one audited bulk
access naming every contact of the batch, in the tick's transaction), and only for the
contacts whose run reached such a step. A write re-seals the record under the contact's
own data key and is audited in the same transaction (`journeys.contact_updated`, naming
the attributes, never their values). Nothing here logs or raises with a value in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.contacts import phi
from carepost.contacts.models import Contact
from carepost.contacts.record import canonical
from carepost.contacts.store import contact_aad
from carepost.crypto.blind_index import record_fingerprint
from carepost.crypto.envelope import seal
from carepost.crypto.keyring import KeyRing
from carepost.db import bulk_update
from carepost.segments import ast as A
from carepost.segments import evaluator
from carepost.segments.service import definitions
from carepost.segments.snapshot import Part, Snapshot
from carepost.tracking.models import EngagementEvent

PURPOSE = "journey steps: branch on contact data, update_contact"
Values = Mapping[str, object]


def with_values(record: Mapping[str, Any], values: Values) -> dict[str, Any]:
    """The record with custom attributes set (`attr.x: v`) or removed (`attr.x: null`)."""
    attrs = dict(record.get("attributes") or {})
    for key, value in values.items():
        name = key[len(A.CUSTOM_PREFIX) :]
        if value is None:
            attrs.pop(name, None)
        else:
            attrs[name] = value
    out = dict(record)
    if attrs:
        out["attributes"] = attrs
    else:
        out.pop("attributes", None)
    return out


class ContactData:
    """The opened contacts of one batch and the masks of the rules asked about them."""

    def __init__(
        self,
        session: Session,
        ring: KeyRing,
        contact_ids: Sequence[str],
        *,
        actor: Actor,
        now: datetime,
    ) -> None:
        ids = sorted(set(contact_ids))
        self.ring = ring
        self.now = now
        self.opened = phi.read_for_job(
            session,
            ring,
            ids,
            actor=actor,
            purpose=PURPOSE,
            action="journeys.contacts_read",
            with_facts=True,
            clock=lambda: now,
        )
        part = Part()
        for cid in sorted(self.opened):
            part.add_contact(cid, self.opened[cid].record, self.opened[cid].facts)
        self.snap = Snapshot.from_parts([part])
        events = []
        for start in range(0, len(ids), 1000):
            for row in session.execute(
                select(
                    EngagementEvent.id,
                    EngagementEvent.contact_id,
                    EngagementEvent.kind,
                    EngagementEvent.name,
                    EngagementEvent.verdict,
                    EngagementEvent.at,
                ).where(EngagementEvent.contact_id.in_(ids[start : start + 1000]))
            ):
                events.append((row[0], row[1], row[2], row[3], row[4], int(row[5].timestamp())))
        self.snap.add_events(sorted(events))
        self.events = events
        self.segments = definitions(session)
        self._masks: dict[int, Any] = {}

    def holds(self, node: A.Node, contact_id: str, overlay: Values | None = None) -> bool:
        """Whether the contact meets the rule (journey predicates excluded: the engine
        decides those), with `overlay` values set by this run's update_contact steps."""
        if contact_id not in self.opened:
            return False  # shredded or deleted since it was enrolled: no data, no match
        if overlay:
            snap = self._one(contact_id, overlay)
            mask = evaluator.evaluate(node, snap, self.now, segments=self.segments)
            return bool(mask[0])
        key = id(node)
        if key not in self._masks:
            self._masks[key] = (
                node,
                evaluator.evaluate(node, self.snap, self.now, segments=self.segments),
            )
        return bool(self._masks[key][1][self.snap.row_of[contact_id]])

    def _one(self, contact_id: str, overlay: Values) -> Snapshot:
        opened = self.opened[contact_id]
        part = Part()
        part.add_contact(contact_id, with_values(opened.record, overlay), opened.facts)
        snap = Snapshot.from_parts([part])
        snap.add_events([e for e in self.events if e[1] == contact_id])
        return snap

    def write(
        self,
        session: Session,
        updates: Sequence[tuple[str, Values]],
        *,
        actor: Actor,
        details: Mapping[str, object],
    ) -> int:
        """Apply (contact, values) in order and re-seal each changed record; one audit
        entry for the batch. Contacts shredded meanwhile are left out. Returns how many
        records changed."""
        records: dict[str, dict[str, Any]] = {}
        names: set[str] = set()
        for contact_id, values in updates:
            if contact_id not in self.opened:
                continue
            base = records.get(contact_id, self.opened[contact_id].record)
            records[contact_id] = with_values(base, values)
            names.update(values)
        if not records:
            return 0
        rows = []
        for contact_id, record in records.items():
            opened = self.opened[contact_id]
            plain = canonical(record)
            sealed = seal(opened.cipher, plain, contact_aad(contact_id, opened.dek_version))
            rows.append((sealed, record_fingerprint(self.ring, plain), self.now, contact_id))
        # updated_at moves: the segment snapshot's refresh re-reads these contacts.
        bulk_update(
            session, Contact.__table__, ("phi", "phi_fingerprint", "updated_at"), ("id",), rows
        )
        audit.append(
            session,
            actor=actor,
            action="journeys.contact_updated",
            subjects=sorted(records),
            details={**details, "attributes": sorted(names)},
            clock=lambda: self.now,
        )
        for contact_id, record in records.items():
            opened = self.opened[contact_id]
            self.opened[contact_id] = phi.OpenedContact(
                contact_id, record, opened.facts, opened.dek_version, opened.cipher
            )
        return len(records)


def needs_contact_data(node: A.Node) -> bool:
    """Whether a branch rule asks anything beyond this journey's own opened()/clicked()."""
    if isinstance(node, A.And | A.Or):
        return any(needs_contact_data(item) for item in node.items)
    if isinstance(node, A.Not):
        return needs_contact_data(node.item)
    return not (isinstance(node, A.Engaged) and node.step is not None and node.within is None)
