"""The revocation race at the gate's batch entry point, on SQLite and PostgreSQL.

A campaign is claimed batch by batch, each batch decided inside its own claiming
transaction (`service.gate_batch`). A revocation committed while the campaign is being
claimed must be honoured by every batch decided after it commits; a batch decided
before it may go. The delivery capability extends this to "not yet handed to SMTP".
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from consent_support import add_contacts

from carepost.audit.actor import Actor
from carepost.clock import fixed_clock
from carepost.consent import gate, service
from carepost.db import transaction
from carepost.workspace import Workspace

SIGNED = datetime.now(UTC) - timedelta(days=30)


def _doc() -> dict[str, object]:
    return {
        "phi_description": "Name and email",
        "disclosers": ["Example Clinic"],
        "recipients": [{"id": "self", "name": "Example Clinic"}],
        "purposes": [{"code": "marketing", "description": "offers"}],
        "expires_at": (SIGNED + timedelta(days=400)).isoformat(),
        "signature": {
            "signer_name": "Synthetic Person",
            "signed_at": SIGNED.isoformat(),
            "method": "electronic",
            "source_address": "198.51.100.1",
            "signed_text": "synthetic authorization text",
        },
        "statements": {
            "right_to_revoke": True,
            "revocation_instructions": "write to us",
            "conditioning": True,
            "redisclosure": True,
        },
    }


def _setup(ws: Workspace, actor: Actor, n: int) -> tuple[list[str], dict[str, str]]:
    with transaction(ws.engine) as s:
        ids = add_contacts(s, ws.keyring, n)
        auths = {}
        for cid in ids:
            auths[cid] = service.add_authorization(
                s, ws.keyring, contact_id=cid, document=_doc(), actor=actor
            )
            service.set_consent(
                s,
                contact_id=cid,
                channel="email",
                topic="newsletter",
                status="opted_in",
                source="form",
                actor=actor,
                clock=fixed_clock(SIGNED),
            )
    return ids, auths


def _claim(
    ws: Workspace,
    actor: Actor,
    ids: list[str],
    hold: float = 0.0,
    decided: threading.Event | None = None,
) -> service.GateRunResult:
    with transaction(ws.engine) as s:
        result = service.gate_batch(
            s,
            campaign_id="race",
            contact_ids=ids,
            message_class="marketing",
            channel="email",
            topic="newsletter",
            sender="self",
            actor=actor,
        )
        if decided is not None:
            decided.set()
        time.sleep(hold)  # the claim is still open: messages being handed over
    return result


def test_revocation_waits_for_an_open_claim_and_binds_every_later_one(
    workspace: Workspace, actor: Actor
) -> None:
    ws = workspace
    ids, auths = _setup(ws, actor, 3)
    target = ids[1]
    decided = threading.Event()
    first: list[service.GateRunResult] = []
    claim = threading.Thread(target=lambda: first.append(_claim(ws, actor, ids, 0.5, decided)))
    claim.start()
    assert decided.wait(30)
    revoke_started = time.monotonic()
    with transaction(ws.engine) as s:
        service.revoke_authorization(s, authorization_id=auths[target], source="form", actor=actor)
    revoke_committed = time.monotonic()
    claim.join(30)
    # The revocation could not commit while the claim that already relied on the
    # authorization was open: it waited for it (row lock on PostgreSQL, write lock on SQLite).
    assert revoke_committed - revoke_started >= 0.3
    assert first[0].decisions[target].allowed
    # Every batch claimed after the revocation committed honours it.
    later = _claim(ws, actor, ids)
    assert later.decisions[target] == gate.Decision(False, (gate.AUTH_REVOKED,), None)
    assert later.decisions[ids[0]].allowed
    assert later.decisions[ids[2]].allowed
    with transaction(ws.engine) as s:
        history = service.explain(s, contact_id=target, campaign_id="race")
    assert [h["allowed"] for h in history] == [False, True]


def test_concurrent_claims_never_use_a_revoked_authorization(
    workspace: Workspace, actor: Actor
) -> None:
    """Claimers decide batches in a loop while the revocation commits at some point. Every
    batch whose transaction began after the revocation committed must deny; no batch may
    allow the contact after a batch denied it."""
    ws = workspace
    ids, auths = _setup(ws, actor, 20)
    target = ids[7]
    runs: list[tuple[float, float, bool]] = []
    lock = threading.Lock()
    revoked = threading.Event()
    errors: list[BaseException] = []

    def claimer(offset: int) -> None:
        try:
            after_revocation = 0
            while after_revocation < 3:
                if revoked.is_set():
                    after_revocation += 1
                batch = ids[offset:] + ids[:offset]
                began = time.monotonic()
                result = _claim(ws, actor, batch)
                ended = time.monotonic()
                with lock:
                    runs.append((began, ended, result.decisions[target].allowed))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(k * 5,)) for k in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.8)
    with transaction(ws.engine) as s:
        service.revoke_authorization(s, authorization_id=auths[target], source="api", actor=actor)
    committed = time.monotonic()
    revoked.set()
    for t in threads:
        t.join(60)
    assert not errors, errors
    before = [r for r in runs if r[1] < committed]
    after = [r for r in runs if r[0] > committed]
    assert before
    assert after, "no batch was claimed after the revocation; the test proved nothing"
    assert all(not allowed for _, _, allowed in after)
    # Once any batch denied, no later-starting batch allowed again.
    first_denied = min((b for b, _, allowed in runs if not allowed), default=None)
    assert first_denied is not None
    assert all(not allowed for b, _, allowed in runs if b > first_denied + 1e-3 and b > committed)
