"""Signing in at the service layer, on both engines and frozen clocks: password then
TOTP, replay refused, recovery codes once, session idle and absolute timeouts, sessions
ended by disabling and by factor changes, throttling without lock-out, the same answer
and the same time for unknown and known addresses, no secret in the audit log."""

from __future__ import annotations

import statistics
import time
from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from carepost.audit.models import AuditEntry
from carepost.db import transaction
from carepost.staff import apikeys, login, service, sessions
from carepost.staff.models import StaffSession, StaffUser
from carepost.workspace import Workspace
from staff_support import NETWORK, PASSWORD, POLICY, SYSTEM, Clock, Staff, add, code_for

OTHER_NETWORK = "192.0.2.0/24"


def _password(
    ws: Workspace,
    email: str,
    password: str,
    clock: Clock,
    *,
    network: str = NETWORK,
    device: str | None = None,
) -> login.PasswordResult:
    return login.password_step(
        ws.engine,
        ws.keyring,
        email,
        password,
        network=network,
        device=device,
        at=clock(),
        policy=POLICY,
    )


def _mfa(
    ws: Workspace, pending: str, code: str, clock: Clock, *, device: str | None = None
) -> login.MfaResult:
    with transaction(ws.engine) as s:
        return login.mfa_step(
            s, ws.keyring, pending, code, network=NETWORK, device=device, at=clock(), policy=POLICY
        )


def _sign_in(ws: Workspace, user: Staff, clock: Clock) -> login.MfaResult:
    clock.advance(seconds=30)  # a fresh TOTP step: each code works once
    first = _password(ws, user.email, PASSWORD, clock)
    assert first.outcome == "mfa"
    result = _mfa(ws, first.pending_token, code_for(ws, user.id, clock()), clock)
    assert result.outcome == "ok"
    return result


def _live(ws: Workspace, token: str, clock: Clock) -> bool:
    with transaction(ws.engine) as s:
        return sessions.resolve(s, token, stage="active", at=clock(), policy=POLICY) is not None


def _actions(ws: Workspace) -> list[str]:
    with transaction(ws.engine) as s:
        return list(s.scalars(select(AuditEntry.action).order_by(AuditEntry.seq)))


def test_password_then_totp_gives_a_new_session(workspace: Workspace) -> None:
    clock = Clock()
    user = add(workspace, "nurse@clinic.example", "care_team", clock=clock)
    first = _password(workspace, "Nurse@Clinic.example ", PASSWORD, clock)
    assert first.outcome == "mfa"
    assert first.pending_token
    # the pending token is not a session
    assert not _live(workspace, first.pending_token, clock)
    done = _mfa(workspace, first.pending_token, code_for(workspace, user.id, clock()), clock)
    assert done.outcome == "ok"
    assert done.user_id == user.id
    assert done.device_cookie
    assert done.session_token != first.pending_token  # rotated at login
    assert _live(workspace, done.session_token, clock)
    # the pending token is spent
    assert _mfa(workspace, first.pending_token, "123456", clock).outcome == "restart"
    with transaction(workspace.engine) as s:
        stored = {row.id for row in s.scalars(select(StaffSession))}
    assert sessions.token_id(done.session_token) in stored
    assert done.session_token not in stored
    assert first.pending_token not in stored
    assert len(done.session_token) == 22  # 128 bits, base64url
    actions = _actions(workspace)
    assert actions[-2:] == ["staff.mfa_confirmed", "staff.login"]


def test_a_totp_code_is_refused_the_second_time(workspace: Workspace) -> None:
    clock = Clock()
    user = add(workspace, "a@clinic.example", "analyst", clock=clock)
    code = code_for(workspace, user.id, clock())
    first = _password(workspace, user.email, PASSWORD, clock)
    assert _mfa(workspace, first.pending_token, code, clock).outcome == "ok"
    clock.advance(seconds=20)  # same or next step: still inside the ±1 window
    again = _password(workspace, user.email, PASSWORD, clock)
    assert _mfa(workspace, again.pending_token, code, clock).outcome == "wrong"
    clock.advance(seconds=40)
    assert (
        _mfa(workspace, again.pending_token, code_for(workspace, user.id, clock()), clock).outcome
        == "ok"
    )


def test_recovery_codes_work_once(workspace: Workspace) -> None:
    clock = Clock()
    user = add(workspace, "a@clinic.example", "analyst", clock=clock)
    assert user.enrolment is not None
    code = user.enrolment.recovery_codes[3]
    first = _password(workspace, user.email, PASSWORD, clock)
    assert _mfa(workspace, first.pending_token, code.upper(), clock).outcome == "ok"
    second = _password(workspace, user.email, PASSWORD, clock)
    assert _mfa(workspace, second.pending_token, code, clock).outcome == "wrong"
    with transaction(workspace.engine) as s:
        entry = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "staff.login").order_by(AuditEntry.seq)
        ).first()
    assert entry is not None
    assert '"factor":"recovery_code"' in entry.details
    assert '"recovery_codes_left":9' in entry.details


def test_five_wrong_codes_end_the_pending_login(workspace: Workspace) -> None:
    clock = Clock()
    user = add(workspace, "a@clinic.example", "analyst", clock=clock)
    first = _password(workspace, user.email, PASSWORD, clock)
    right = code_for(workspace, user.id, clock())
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    outcomes = [_mfa(workspace, first.pending_token, wrong, clock).outcome for _ in range(5)]
    assert outcomes == ["wrong"] * 4 + ["restart"]
    assert _mfa(workspace, first.pending_token, right, clock).outcome == "restart"


def test_idle_and_absolute_timeouts(workspace: Workspace) -> None:
    clock = Clock()
    user = add(workspace, "a@clinic.example", "analyst", clock=clock)
    token = _sign_in(workspace, user, clock).session_token
    # each request restarts the idle clock; 14:59 of quiet is fine, 15:00 is not
    for _ in range(3):
        clock.advance(minutes=14, seconds=59)
        assert _live(workspace, token, clock)
    clock.advance(minutes=15)
    assert not _live(workspace, token, clock)
    clock.advance(seconds=1)
    token = _sign_in(workspace, user, clock).session_token
    start = clock()
    while clock() + timedelta(minutes=10) < start + POLICY.absolute:
        clock.advance(minutes=10)
        assert _live(workspace, token, clock)
    clock.now = start + POLICY.absolute - timedelta(seconds=1)
    assert _live(workspace, token, clock)
    clock.advance(seconds=1)  # 12 h after sign-in, however busy
    assert not _live(workspace, token, clock)
    with transaction(workspace.engine) as s:
        reasons = sorted(r.end_reason or "" for r in s.scalars(select(StaffSession)))
    assert reasons == ["absolute_timeout", "idle_timeout", "rotated", "rotated"]


@pytest.mark.parametrize("change", ["disable", "reset_mfa", "password"])
def test_disabling_or_changing_a_factor_ends_every_session(
    workspace: Workspace, change: str
) -> None:
    clock = Clock()
    user = add(workspace, "a@clinic.example", "analyst", clock=clock)
    tokens = [_sign_in(workspace, user, clock).session_token for _ in range(2)]
    clock.advance(minutes=1)
    pending = _password(workspace, user.email, PASSWORD, clock).pending_token
    with transaction(workspace.engine) as s:
        if change == "disable":
            ended = service.do_disable_user(s, SYSTEM, user.id, clock=clock)
        elif change == "reset_mfa":
            service.do_reset_mfa(s, workspace.keyring, SYSTEM, user.id, clock=clock)
            ended = 3
        else:
            ended = service.do_set_password(
                s, SYSTEM, user.id, "a new long passphrase", clock=clock
            )
    assert ended == 3
    assert not any(_live(workspace, t, clock) for t in tokens)
    assert (
        _mfa(workspace, pending, code_for(workspace, user.id, clock()), clock).outcome == "restart"
    )


# --- throttling -------------------------------------------------------------------------------
def test_throttle_slows_guessing_without_locking_the_person_out(workspace: Workspace) -> None:
    clock = Clock()
    user = add(workspace, "boss@clinic.example", "owner", clock=clock)
    # The person signs in once from their browser: it gets a device cookie.
    device = _sign_in(workspace, user, clock).device_cookie
    clock.advance(minutes=1)
    # An attacker guesses from another network: 5 free failures, then a doubling wait.
    for _ in range(5):
        assert (
            _password(workspace, user.email, "guess " * 3, clock, network=OTHER_NETWORK).outcome
            == "failed"
        )
    blocked = _password(workspace, user.email, PASSWORD, clock, network=OTHER_NETWORK)
    assert blocked.outcome == "throttled"
    assert blocked.retry_after == 2
    # refused attempts change nothing: hammering does not push the wait further out
    for _ in range(20):
        _password(workspace, user.email, "guess " * 3, clock, network=OTHER_NETWORK)
    clock.advance(seconds=2)
    assert (
        _password(workspace, user.email, "guess " * 3, clock, network=OTHER_NETWORK).outcome
        == "failed"
    )
    # The person, from a new browser on their own network: the account-wide wait applies...
    assert _password(workspace, user.email, PASSWORD, clock).outcome == "throttled"
    # ...but their own browser, with its device cookie, is judged by its own counter.
    ok = _password(workspace, user.email, PASSWORD, clock, device=device)
    assert ok.outcome == "mfa"
    # A forged device cookie is worth nothing.
    forged = device[:-4] + ("0000" if not device.endswith("0000") else "1111")
    assert _password(workspace, user.email, PASSWORD, clock, device=forged).outcome == "throttled"
    # The account-wide wait never exceeds its cap (60 s): no lock-out.
    for _ in range(10):
        clock.advance(seconds=61)
        _password(workspace, user.email, "guess " * 3, clock, network=f"10.{_}.0.0/24")
    clock.advance(seconds=60)
    assert _password(workspace, user.email, PASSWORD, clock).outcome == "mfa"


def test_network_throttle_covers_every_account(workspace: Workspace) -> None:
    clock = Clock()
    user = add(workspace, "a@clinic.example", "analyst", clock=clock)
    for i in range(20):  # spraying many addresses from one network
        assert _password(workspace, f"x{i}@clinic.example", "spray " * 3, clock).outcome == "failed"
    assert _password(workspace, user.email, PASSWORD, clock).outcome == "throttled"
    assert _password(workspace, user.email, PASSWORD, clock, network=OTHER_NETWORK).outcome == "mfa"


def test_success_clears_the_account_counters(workspace: Workspace) -> None:
    clock = Clock()
    user = add(workspace, "a@clinic.example", "analyst", clock=clock)
    for _ in range(4):
        _password(workspace, user.email, "wrong " * 3, clock)
    _sign_in(workspace, user, clock)
    for _ in range(4):  # four more failures are free again
        assert _password(workspace, user.email, "wrong " * 3, clock).outcome == "failed"
    assert _password(workspace, user.email, PASSWORD, clock).outcome == "mfa"


# --- no enumeration ---------------------------------------------------------------------------
def test_unknown_disabled_and_wrong_get_the_same_answer(workspace: Workspace) -> None:
    clock = Clock()
    add(workspace, "known@clinic.example", "analyst", clock=clock)
    gone = add(workspace, "gone@clinic.example", "analyst", clock=clock)
    add(workspace, "svc@clinic.example", "analyst", kind="service", clock=clock)
    with transaction(workspace.engine) as s:
        service.do_disable_user(s, SYSTEM, gone.id, clock=clock)
    answers = {
        _password(workspace, "known@clinic.example", "not the password!", clock),
        _password(workspace, "nobody@clinic.example", PASSWORD, clock),
        _password(workspace, "gone@clinic.example", PASSWORD, clock),
        _password(workspace, "svc@clinic.example", PASSWORD, clock),
    }
    assert answers == {login.PasswordResult("failed")}
    with transaction(workspace.engine) as s:
        failed = list(
            s.scalars(select(AuditEntry).where(AuditEntry.action == "staff.login_failed"))
        )
    assert len(failed) == 4
    assert all("nobody" not in (e.actor + e.details) for e in failed)


@pytest.mark.slow
def test_login_time_does_not_tell_whether_an_account_exists(workspace: Workspace) -> None:
    """Median time of a failed password step, known vs unknown address, with the real
    argon2id parameters: within 5 ms. Samples interleave so machine noise hits both."""
    clock = Clock()
    add(workspace, "known@clinic.example", "analyst", clock=clock)
    samples: dict[str, list[float]] = {"known": [], "unknown": []}
    for i in range(2):  # warm up both paths (dummy hash, caches, connections)
        _password(workspace, "known@clinic.example", "wrong password!", clock, network=f"w{i}")
        _password(workspace, "unknown@clinic.example", "wrong password!", clock, network=f"w{i}")
    for i in range(40):
        clock.advance(hours=2)  # every counter's window passes: never throttled
        order = ["known", "unknown"] if i % 2 else ["unknown", "known"]
        for who in order:
            started = time.perf_counter()
            result = _password(
                workspace, f"{who}@clinic.example", "wrong password!", clock, network=f"n{i}"
            )
            samples[who].append(time.perf_counter() - started)
            assert result.outcome == "failed"
    known, unknown = (statistics.median(samples[k]) for k in ("known", "unknown"))
    print(f"median known {known * 1000:.2f} ms, unknown {unknown * 1000:.2f} ms")
    assert abs(known - unknown) < 0.005


def test_no_secret_reaches_the_audit_log(workspace: Workspace) -> None:
    clock = Clock()
    user = add(workspace, "a@clinic.example", "analyst", clock=clock)
    assert user.enrolment is not None
    code = code_for(workspace, user.id, clock())
    first = _password(workspace, user.email, PASSWORD, clock)
    _password(workspace, user.email, "wrong-password-typed", clock)
    done = _mfa(workspace, first.pending_token, code, clock)
    _mfa(
        workspace,
        _password(workspace, user.email, PASSWORD, clock).pending_token,
        user.enrolment.recovery_codes[0],
        clock,
    )
    with transaction(workspace.engine) as s:
        key = apikeys.do_create_api_key(
            s, SYSTEM, owner=user.id, name="k", scopes=["reports:read"], clock=clock
        )
        enrolment = service.do_reset_mfa(s, workspace.keyring, SYSTEM, user.id, clock=clock)
    with transaction(workspace.engine) as s:
        text = repr(
            [
                (e.actor, e.action, e.subjects, e.purpose, e.source_address, e.details)
                for e in s.scalars(select(AuditEntry))
            ]
        )
    secrets_seen = [
        PASSWORD,
        "wrong-password-typed",
        code,
        user.enrolment.secret,
        enrolment.secret,
        first.pending_token,
        done.session_token,
        done.device_cookie,
        key.token,
        key.token.split("_", 2)[2],
        *user.enrolment.recovery_codes,
        *enrolment.recovery_codes,
    ]
    assert [s for s in secrets_seen if s in text] == []


def test_a_hash_with_weaker_parameters_is_replaced_at_sign_in(workspace: Workspace) -> None:
    clock = Clock()
    user = add(workspace, "a@clinic.example", "analyst", clock=clock)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with transaction(workspace.engine) as s:
        row = s.get(StaffUser, user.id)
        assert row is not None
        row.password_hash = weak
    assert _password(workspace, user.email, "not it, not it", clock).outcome == "failed"
    with transaction(workspace.engine) as s:
        assert s.get(StaffUser, user.id).password_hash == weak  # type: ignore[union-attr]
    assert _password(workspace, user.email, PASSWORD, clock).outcome == "mfa"
    with transaction(workspace.engine) as s:
        stored = s.get(StaffUser, user.id).password_hash  # type: ignore[union-attr]
    assert stored is not None
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
