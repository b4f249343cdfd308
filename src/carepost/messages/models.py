"""The per-message data of one-off messages, sealed.

Values given with a one-off message (a lab result's name, an order number) are PHI: they
are sealed under the contact's data key with AAD `message_data|body|outbox id|dek
version`, keyed by the outbox row, so the queue row stays ids only and shredding the
contact shreds them too."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from carepost.db import Base


class MessageData(Base):
    __tablename__ = "message_data"

    outbox_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("outbox.id", ondelete="CASCADE"), primary_key=True
    )
    dek_version: Mapped[int] = mapped_column(Integer)
    body: Mapped[bytes] = mapped_column(LargeBinary)  # sealed JSON object
