"""portal.limits: the pure decisions behind the portal's rate limits and lock-out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from carepost.portal import limits as lim

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
L = lim.PortalLimits(codes_per_message=3, codes_per_network=5, lock_after=3, wrong_per_network=4)


def test_code_requests() -> None:
    def ask(**kw: object) -> lim.Refusal | None:
        args: dict[str, object] = {
            "locked_until": None,
            "codes_for_message": 0,
            "codes_for_network": 0,
            "at": AT,
        }
        args.update(kw)
        return lim.may_request_code(L, **args)  # type: ignore[arg-type]

    assert ask() is None
    assert ask(codes_for_message=2) is None
    assert ask(codes_for_message=3) == "too_many_codes"
    assert ask(codes_for_network=5) == "network_limit"
    assert ask(locked_until=AT + timedelta(seconds=1)) == "locked"
    assert ask(locked_until=AT) is None  # a lock ends at its time


def test_answers_and_lock() -> None:
    assert lim.may_answer(L, locked_until=None, wrong_for_network=3, at=AT) is None
    assert lim.may_answer(L, locked_until=None, wrong_for_network=4, at=AT) == "network_limit"
    later = AT + L.lock_for
    assert lim.may_answer(L, locked_until=later, wrong_for_network=0, at=AT) == "locked"
    tries = 0
    for _ in range(2):
        after = lim.after_wrong(L, failed_tries=tries, at=AT)
        assert after.locked_until is None
        tries = after.failed_tries
    assert tries == 2
    locked = lim.after_wrong(L, failed_tries=tries, at=AT)
    assert locked == lim.AfterWrong(0, AT + L.lock_for)


def test_sessions_and_codes() -> None:
    created = AT
    assert lim.session_alive(L, created_at=created, last_seen_at=AT, at=AT + timedelta(minutes=14))
    assert not lim.session_alive(
        L, created_at=created, last_seen_at=AT, at=AT + timedelta(minutes=15)
    )
    # Kept alive by use, but never past the hard limit.
    near_end = AT + L.session_max - timedelta(minutes=1)
    assert lim.session_alive(L, created_at=created, last_seen_at=near_end, at=near_end)
    assert not lim.session_alive(
        L, created_at=created, last_seen_at=near_end, at=AT + L.session_max
    )
    expires = AT + L.code_ttl
    assert lim.code_alive(
        created_at=AT, expires_at=expires, used_at=None, at=expires - timedelta(seconds=1)
    )
    assert not lim.code_alive(created_at=AT, expires_at=expires, used_at=None, at=expires)
    assert not lim.code_alive(created_at=AT, expires_at=expires, used_at=AT, at=AT)
