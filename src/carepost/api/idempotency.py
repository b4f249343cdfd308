"""`Idempotency-Key` on every POST that creates or sends, with Stripe's semantics.

    @router.post("/events", status_code=202, **guard("events:write"))
    def send_event(body: EventIn, ctx: Caller, once: Once) -> Response:
        return once.run(ctx, lambda session: do_it(session, ...), status=202)

- No key: the action runs in one transaction, as any route's would.
- A new key: a reservation row (no answer yet) commits first, in its own short
  transaction; then the action runs, and its answer is written into that row IN THE SAME
  TRANSACTION as the action's changes and audit entries. So a crash leaves either the
  action with its stored answer, or neither (only the reservation, which a retry takes
  over once it is older than `api_idempotency_lease_seconds`).
- The same key and the same request (method, route path and canonical JSON body) again:
  the first answer is replayed, with `Idempotent-Replayed: true`; nothing runs.
- The same key with a different request: 422 `idempotency-conflict`.
- The same key while the first request is still running: 409 `idempotency-in-flight`.
- The action raises (bad input, not found, permission): the reservation is released, so
  the caller may correct the request and retry with the same key (nothing was done).

Stored answers are plain JSON: routes that create or send answer ids, counts, states and
per-row problems (a field's pointer and what is wrong with it), never PHI, so the table
holds none. Keys are per caller (`apikey:<id>` or `user:<id>`) and kept at least 24 hours
(`api_idempotency_hours`); `carepost api purge-idempotency` removes older ones.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from carepost.api.models import ApiIdempotency
from carepost.api.problems import Problem
from carepost.db import transaction
from carepost.workspace import Workspace

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """SHA-256 of the request as far as idempotency cares: the same JSON in another key
    order or spacing is the same request."""
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS) if body else b""
    except orjson.JSONDecodeError:
        canonical = body
    h = hashlib.sha256()
    h.update(method.upper().encode() + b"\n" + path.encode() + b"\n")
    h.update(canonical)
    return h.hexdigest()


@dataclass(frozen=True)
class Policy:
    keep: timedelta  # answers are replayed for this long
    lease: timedelta  # an unanswered reservation older than this is a crashed request's


@dataclass(frozen=True)
class Stored:
    status: int
    body: bytes


def _reserve(
    workspace: Workspace,
    owner: str,
    key: str,
    method: str,
    path: str,
    fingerprint: str,
    now: datetime,
    policy: Policy,
) -> Stored | None:
    """Reserve the key (None: go ahead) or return the answer to replay; raise the
    problem for a conflict or a request in flight."""
    for _ in range(3):
        try:
            with transaction(workspace.engine) as s:
                row = s.get(ApiIdempotency, (owner, key), with_for_update=True)
                if row is None:
                    s.add(
                        ApiIdempotency(
                            owner=owner,
                            key=key,
                            method=method,
                            path=path,
                            request_sha256=fingerprint,
                            status=None,
                            response=None,
                            created_at=now,
                        )
                    )
                    s.flush()
                    return None
                stale = row.created_at < now - (policy.lease if row.status is None else policy.keep)
                if stale:  # a crashed request's reservation, or a key past its keeping
                    row.method, row.path, row.request_sha256 = method, path, fingerprint
                    row.status, row.response, row.created_at = None, None, now
                    return None
                if row.request_sha256 != fingerprint:
                    raise Problem(
                        422,
                        "idempotency-conflict",
                        f"this {HEADER} was used with a different request",
                    )
                if row.status is None:
                    raise Problem(
                        409,
                        "idempotency-in-flight",
                        f"a request with this {HEADER} is still running; retry later",
                        headers={"Retry-After": "1"},
                    )
                return Stored(row.status, bytes(row.response or b""))
        except IntegrityError:
            continue  # another request inserted the key first: read what it left
    raise Problem(409, "idempotency-in-flight", f"a request with this {HEADER} is running")


def _release(workspace: Workspace, owner: str, key: str) -> None:
    with transaction(workspace.engine) as s:
        s.execute(
            delete(ApiIdempotency).where(
                ApiIdempotency.owner == owner,
                ApiIdempotency.key == key,
                ApiIdempotency.status.is_(None),
            )
        )


def execute(
    workspace: Workspace,
    *,
    owner: str,
    key: str | None,
    method: str,
    path: str,
    fingerprint: str,
    now: datetime,
    policy: Policy,
    action: Callable[[Session], Any],
    status: int,
) -> Response:
    """Run `action(session)` at most once per (owner, key); its return value (a pydantic
    model, dict or list) is the JSON answer."""
    if key is None:
        with transaction(workspace.engine) as s:
            content = jsonable_encoder(action(s))
        return JSONResponse(content, status_code=status)
    stored = _reserve(workspace, owner, key, method, path, fingerprint, now, policy)
    if stored is not None:
        return Response(
            stored.body,
            status_code=stored.status,
            media_type="application/json",
            headers={REPLAYED: "true"},
        )
    try:
        with transaction(workspace.engine) as s:
            content = jsonable_encoder(action(s))
            body = orjson.dumps(content)
            done = s.execute(
                update(ApiIdempotency)
                .where(
                    ApiIdempotency.owner == owner,
                    ApiIdempotency.key == key,
                    ApiIdempotency.request_sha256 == fingerprint,
                    ApiIdempotency.status.is_(None),
                )
                .values(status=status, response=body)
            )
            if getattr(done, "rowcount", 0) != 1:
                # The lease ran out and a retry took the key over: this run must not
                # commit a second action under it.
                raise Problem(409, "idempotency-in-flight", f"this {HEADER} was taken over")
    except BaseException:
        _release(workspace, owner, key)
        raise
    return Response(body, status_code=status, media_type="application/json")


def purge(session: Session, *, now: datetime, keep: timedelta) -> int:
    """Delete keys older than `keep` (never less than 24 h); returns how many."""
    if keep < timedelta(hours=24):
        raise ValueError("idempotency keys are kept at least 24 hours")
    result = session.execute(delete(ApiIdempotency).where(ApiIdempotency.created_at < now - keep))
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class IdempotentRequest:
    """What a route needs to honour `Idempotency-Key`: see `run`."""

    key: str | None
    method: str
    path: str
    fingerprint: str

    def run(self, ctx: Any, action: Callable[[Session], Any], *, status: int = 200) -> Response:
        settings = ctx.workspace.settings
        policy = Policy(
            timedelta(hours=settings.api_idempotency_hours),
            timedelta(seconds=settings.api_idempotency_lease_seconds),
        )
        return execute(
            ctx.workspace,
            owner=ctx.principal.actor.id,
            key=self.key,
            method=self.method,
            path=self.path,
            fingerprint=self.fingerprint,
            now=ctx.at,
            policy=policy,
            action=action,
            status=status,
        )


async def idempotent_request(
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="Any unique text (a UUID): a retry with the same key and body "
            "replays the first answer instead of acting twice. Kept at least 24 hours.",
            max_length=255,
            pattern=r"^[\x21-\x7e]{1,255}$",
        ),
    ] = None,
) -> IdempotentRequest:
    if idempotency_key is not None and not _KEY.match(idempotency_key):
        raise Problem(
            400,
            "invalid-idempotency-key",
            f"{HEADER} must be 1 to 255 printable ASCII characters without spaces",
            errors=[{"pointer": f"/header/{HEADER}", "detail": "not a valid key"}],
        )
    body = await request.body()
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    return IdempotentRequest(
        idempotency_key,
        request.method,
        path,
        request_fingerprint(request.method, request.url.path, body),
    )


Once = Annotated[IdempotentRequest, Depends(idempotent_request)]
