"""The one interface every transport (smtp, capture, null, and later portal) offers."""

from __future__ import annotations

from typing import Protocol

from carepost.delivery.smtp import Attempt, Envelope


class Transport(Protocol):
    name: str
    method: str  # what the evidence records as the delivery method

    async def send(self, envelope: Envelope) -> Attempt: ...

    async def close(self) -> None: ...
