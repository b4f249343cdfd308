"""GET /me: who the API takes the caller for, and what it may do. The pattern every
resource module follows: a router, pydantic models for bodies and answers, and route
functions that call service functions with `ctx.principal`."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from carepost.api.context import Caller
from carepost.api.text_guard import NulFreeRoute

router = APIRouter(tags=["me"], route_class=NulFreeRoute)


class Me(BaseModel):
    kind: str
    actor: str
    user_id: str | None
    api_key_id: str | None
    permissions: list[str]


@router.get("/me", response_model=Me, summary="The caller and its permissions")
def me(ctx: Caller) -> Me:
    p = ctx.principal
    return Me(
        kind=p.kind,
        actor=p.actor.id,
        user_id=p.user_id,
        api_key_id=p.api_key_id,
        permissions=sorted(p.permissions),
    )
