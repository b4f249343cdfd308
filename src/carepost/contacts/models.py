"""Contact tables. PHI lives only in the sealed `phi`/`payload` columns; everything
plain here (ids, times, kinds, blind indexes, keyed fingerprints) reveals no PHI."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from carepost.db import Base, UTCDateTime


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # Indexed: the segment snapshot's change cursor (segments/snapshot.py).
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    source: Mapped[str] = mapped_column(String(32))  # importer kind: csv, fhir, api
    phi: Mapped[bytes] = mapped_column(LargeBinary)
    phi_fingerprint: Mapped[str] = mapped_column(String(32))
    # An IANA zone name (journeys' times of day and date triggers); not PHI. None: the
    # account's `journeys.default_time_zone`.
    time_zone: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ContactKey(Base):
    """The contact's data key, wrapped by a KEK version. Deleting this row shreds the contact."""

    __tablename__ = "contact_keys"

    contact_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    dek_version: Mapped[int] = mapped_column(Integer)
    kek_version: Mapped[int] = mapped_column(Integer, index=True)
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary)


class ContactLookup(Base):
    """Blind-index lookups: source identifiers (unique), emails, phones and MRNs."""

    __tablename__ = "contact_lookups"
    # On SQLite the primary key is the table: no second copy of every blind index.
    __table_args__ = ({"sqlite_with_rowid": False},)

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    value_bi: Mapped[str] = mapped_column(String(32), primary_key=True)
    contact_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ClinicalFact(Base):
    __tablename__ = "clinical_facts"
    __table_args__ = (UniqueConstraint("contact_id", "source_bi"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    contact_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16), index=True)
    source_bi: Mapped[str] = mapped_column(String(32))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    fingerprint: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Indexed: the segment snapshot's change cursor (segments/snapshot.py).
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ImportRun(Base):
    """One import: counts only, so an operator can see what happened without PHI."""

    __tablename__ = "import_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    summary: Mapped[str] = mapped_column(String)  # JSON counts per resource type


class ContactEncryptionKey(Base):
    """A contact's S/MIME certificate or OpenPGP public key for end-to-end encrypted mail.
    A certificate names its holder (and often an address), so the key material is sealed
    under the contact's data key (AAD `contact_encryption_keys|material|id|dek_version`);
    kind, fingerprint and dates are plain so listing and choosing never decrypt."""

    __tablename__ = "contact_encryption_keys"
    __table_args__ = (UniqueConstraint("contact_id", "kind", "fingerprint"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    contact_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(8))  # smime | pgp
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the cert DER | PGP fpr
    not_after: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    dek_version: Mapped[int] = mapped_column(Integer)
    material: Mapped[bytes] = mapped_column(LargeBinary)
