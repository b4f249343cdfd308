"""Rate limits and lock-outs of the portal: the pure decision core.

Everything is counted in the database (any number of web processes share it) and
decided here from the counts and a time. Two things are limited, each per message and per
client network (/24 or /48, as the audit log records it):

* asking for a code: mail to the patient, and a way to flood their mailbox;
* wrong answers (code or date of birth): guessing. After `lock_after` wrong answers in
  a row a message locks for `lock_for`; every outstanding code then dies with it, so a
  guesser cannot outlast the lock with codes asked for before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Refusal = Literal["locked", "too_many_codes", "network_limit"]
AnswerRefusal = Literal["locked", "network_limit"]


@dataclass(frozen=True)
class PortalLimits:
    code_ttl: timedelta = timedelta(minutes=10)
    codes_per_message: int = 5  # within `code_window`
    codes_per_network: int = 30
    code_window: timedelta = timedelta(hours=1)
    lock_after: int = 5  # wrong answers in a row on one message
    lock_for: timedelta = timedelta(minutes=30)
    wrong_per_network: int = 30  # within `wrong_window`, over all messages
    wrong_window: timedelta = timedelta(minutes=15)
    session_idle: timedelta = timedelta(minutes=15)
    session_max: timedelta = timedelta(hours=1)


def locked(locked_until: datetime | None, at: datetime) -> bool:
    return locked_until is not None and at < locked_until


def may_request_code(
    limits: PortalLimits,
    *,
    locked_until: datetime | None,
    codes_for_message: int,
    codes_for_network: int,
    at: datetime,
) -> Refusal | None:
    """`codes_for_*`: codes issued within `code_window` before `at`."""
    if locked(locked_until, at):
        return "locked"
    if codes_for_network >= limits.codes_per_network:
        return "network_limit"
    if codes_for_message >= limits.codes_per_message:
        return "too_many_codes"
    return None


def may_answer(
    limits: PortalLimits,
    *,
    locked_until: datetime | None,
    wrong_for_network: int,
    at: datetime,
) -> AnswerRefusal | None:
    """Before an answer is even checked: a locked message or a guessing network is refused
    without looking, so a right guess during a lock tells the guesser nothing."""
    if locked(locked_until, at):
        return "locked"
    if wrong_for_network >= limits.wrong_per_network:
        return "network_limit"
    return None


@dataclass(frozen=True)
class AfterWrong:
    failed_tries: int
    locked_until: datetime | None


def after_wrong(limits: PortalLimits, *, failed_tries: int, at: datetime) -> AfterWrong:
    """One more wrong answer on a message; at the limit it locks and the count restarts."""
    tries = failed_tries + 1
    if tries >= limits.lock_after:
        return AfterWrong(0, at + limits.lock_for)
    return AfterWrong(tries, None)


def session_alive(
    limits: PortalLimits, *, created_at: datetime, last_seen_at: datetime, at: datetime
) -> bool:
    return at < last_seen_at + limits.session_idle and at < created_at + limits.session_max


def code_alive(
    *, created_at: datetime, expires_at: datetime, used_at: datetime | None, at: datetime
) -> bool:
    return used_at is None and created_at <= at < expires_at
