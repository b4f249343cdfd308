"""One row per account setting that differs from its default (account/settings.py names
them). No PHI: setting names, their values, who changed them and when."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from carepost.db import Base, UTCDateTime


class AccountSetting(Base):
    __tablename__ = "account_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
