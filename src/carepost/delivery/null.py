"""A transport that accepts everything and sends nothing: for measuring the engine
without a network, and for dry runs. Evidence says `null`, so nobody mistakes it."""

from __future__ import annotations

from carepost.delivery.outcome import classify_reply
from carepost.delivery.smtp import Attempt, Envelope

REPLY = "250 2.0.0 discarded by the null transport"


class NullTransport:
    name = "null"
    method = "null"

    def __init__(self) -> None:
        self.accepted = 0

    async def send(self, envelope: Envelope) -> Attempt:
        self.accepted += 1
        return Attempt(classify_reply("data", 250, REPLY[4:]), REPLY)

    async def close(self) -> None:
        return None
