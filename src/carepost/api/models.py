"""The REST API's own table: idempotency keys and the first answer given under each."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from carepost.db import Base, UTCDateTime


class ApiIdempotency(Base):
    """One `Idempotency-Key` of one caller. `status` is None while the first request is
    in flight (its reservation); then the answer's status and body, written in the same
    transaction as the action, so a committed action always has its key and a key with
    an answer always has its action."""

    __tablename__ = "api_idempotency"

    owner: Mapped[str] = mapped_column(String(128), primary_key=True)  # apikey:<id> | user:<id>
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))  # the route's path: ids only, never PHI
    request_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
