"""The one interface every transport (smtp, capture, null, direct) offers, and how a
batch goes through one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from carepost.delivery.smtp import Attempt, Envelope


class Transport(Protocol):
    name: str
    method: str  # what the evidence records as the delivery method

    async def send(self, envelope: Envelope) -> Attempt: ...

    async def close(self) -> None: ...


@runtime_checkable
class BatchTransport(Protocol):
    """A transport that sends many messages better than one at a time (the relay
    streams them over pipelined sessions: `SmtpTransport.send_batch`)."""

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[Attempt]: ...


async def send_all(
    transport: Transport, envelopes: Sequence[Envelope], concurrency: int
) -> list[Attempt]:
    """Every envelope's attempt, in order: by the transport's own batch path when it has
    one, else `concurrency` senders that each take the next message as they finish (one
    task a sender rather than a message, which costs the loop less)."""
    if isinstance(transport, BatchTransport):
        return await transport.send_batch(envelopes)
    attempts: list[Attempt | None] = [None] * len(envelopes)
    queue = iter(range(len(envelopes)))

    async def sender() -> None:
        for i in queue:
            attempts[i] = await transport.send(envelopes[i])

    await asyncio.gather(*(sender() for _ in range(min(concurrency, len(envelopes)))))
    return [a for a in attempts if a is not None]
