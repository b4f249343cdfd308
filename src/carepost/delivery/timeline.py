"""A message's timeline, every state change with its time, read from the two places that
hold it.

`outbox_transitions` has the changes made outside a sending attempt: queued, claimed,
gate denied, no address, not encryptable, lease expired. The attempt itself
(attempt_started and its result: sent, deferred, failed, unknown) is its
`delivery_attempts` row: `started_at`, `finished_at`, `result_state`, `result_reason`.
Writing those again as transitions cost two rows and two sequence queries a message on
the worker's hot path: about 20 µs of PostgreSQL's CPU a message (docs/benchmarks.md),
and two thirds of the rows of the outbox's largest table. The attempt records the seq of
the `claimed` transition it follows, which places it among the transitions.

Order: by time; at the same time (a test's frozen clock, or one worker's batch), by
position: a transition at its seq, an attempt's start and result just after the claim
they follow. Attempt rows from before migration 0019 carry no `claim_seq`: their start
and result are transition rows, and they add nothing here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.delivery.models import DeliveryAttempt, OutboxTransition

Step = tuple[str, datetime, str | None]  # state, at, detail (a reason code or worker name)
# seq, state, at, detail
TransitionRow = tuple[int, str, datetime, str | None]
# claim_seq, started_at, finished_at, result_state, result_reason
AttemptRow = tuple[int | None, datetime, datetime | None, str | None, str | None]

STARTED = "attempt_started"


def merge(transitions: Iterable[TransitionRow], attempts: Iterable[AttemptRow]) -> list[Step]:
    """The timeline from a message's transition rows and attempt rows (pure)."""
    keyed: list[tuple[tuple[datetime, int, int], Step]] = [
        ((at, seq, 0), (state, at, detail)) for seq, state, at, detail in transitions
    ]
    for claim_seq, started_at, finished_at, result_state, result_reason in attempts:
        if claim_seq is None:
            continue
        keyed.append(((started_at, claim_seq, 1), (STARTED, started_at, None)))
        if result_state is not None and finished_at is not None:
            keyed.append(((finished_at, claim_seq, 2), (result_state, finished_at, result_reason)))
    keyed.sort(key=lambda item: item[0])
    return [step for _, step in keyed]


def read(session: Session, outbox_id: str) -> list[Step]:
    transitions = session.execute(
        select(
            OutboxTransition.seq,
            OutboxTransition.state,
            OutboxTransition.at,
            OutboxTransition.detail,
        ).where(OutboxTransition.outbox_id == outbox_id)
    ).all()
    attempts = session.execute(
        select(
            DeliveryAttempt.claim_seq,
            DeliveryAttempt.started_at,
            DeliveryAttempt.finished_at,
            DeliveryAttempt.result_state,
            DeliveryAttempt.result_reason,
        ).where(DeliveryAttempt.outbox_id == outbox_id)
    ).all()
    return merge(
        [(r[0], r[1], r[2], r[3]) for r in transitions],
        [(r[0], r[1], r[2], r[3], r[4]) for r in attempts],
    )
