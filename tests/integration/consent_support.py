"""Helpers for the consent integration tests: synthetic contacts in a workspace."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from carepost.contacts.store import ContactInput, ContactWriter
from carepost.crypto.keyring import KeyRing


def add_contacts(session: Session, ring: KeyRing, n: int, *, prefix: str = "p") -> list[str]:
    """n synthetic contacts with emails `{prefix}{i}@example.org` and phones; their ids."""
    writer = ContactWriter(session, ring, now=datetime.now(UTC), source="test")
    inputs = [
        ContactInput(
            f"test:{prefix}{i}",
            {"v": 1, "emails": [f"{prefix}{i}@example.org"], "phones": [f"555010{i:04d}"]},
            [("email", f"{prefix}{i}@example.org"), ("phone", f"1555010{i:04d}")],
        )
        for i in range(n)
    ]
    outcomes = writer.upsert_contacts(inputs)
    ids = [o.contact_id for o in outcomes]
    assert all(ids)
    return [i for i in ids if i]
