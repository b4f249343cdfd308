"""GET /messages/{id}/evidence: proof of delivery of one message (delivery/evidence.py):
decisions, timeline, attempts, the relay's replies; ids, hashes and codes, no PHI."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from carepost.api.context import Caller, guard
from carepost.api.params import IdPath
from carepost.api.responses import problems
from carepost.api.text_guard import NulFreeRoute
from carepost.delivery import evidence as delivery_evidence

router = APIRouter(tags=["evidence"], route_class=NulFreeRoute)


@router.get(
    "/messages/{message_id}/evidence",
    response_model=dict[str, Any],
    summary="Proof of delivery of one message",
    responses=problems(404),
    **guard("evidence:read"),
)
def message_evidence(message_id: IdPath, ctx: Caller) -> dict[str, Any]:
    with ctx.transaction() as s:
        return delivery_evidence.evidence(s, message_id, principal=ctx.principal)
