"""POST /events: a named event for a contact; it triggers and wakes journeys
(journeys/events.do_send_event). Idempotent with `Idempotency-Key`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from carepost.api.context import Caller, guard
from carepost.api.idempotency import Once
from carepost.api.params import IdField
from carepost.api.responses import problems
from carepost.api.text_guard import NulFreeRoute
from carepost.journeys import events

router = APIRouter(tags=["events"], route_class=NulFreeRoute)


class EventIn(BaseModel):
    name: str = Field(
        min_length=1,
        max_length=129,
        pattern=r"^[a-z][a-z0-9_.-]{0,63}(:[A-Za-z0-9_.-]{1,64})?$",
        description="e.g. purchase, lab_result or form_submitted:newsletter",
    )
    contact_id: IdField
    props: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict,
        max_length=64,
        description="Matched against journey triggers' `where`; not stored.",
    )


class EventOut(BaseModel):
    enrolled: dict[str, int]
    woken: int
    goal_reached: int


@router.post(
    "/events",
    status_code=202,
    response_model=EventOut,
    summary="Record an event (starts and wakes journeys)",
    responses=problems(400, 404, 409),
    **guard("events:write"),
)
def send_event(body: EventIn, ctx: Caller, once: Once) -> Response:
    def act(session: Session) -> EventOut:
        got = events.do_send_event(
            session,
            body.name,
            body.contact_id,
            body.props,
            actor=ctx.principal.actor,
            clock=lambda: ctx.at,
            principal=ctx.principal,
        )
        return EventOut.model_validate(got.as_dict())

    return once.run(ctx, act, status=202)
