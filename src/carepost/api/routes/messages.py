"""POST /messages: send one treatment, operations or transactional message; GET
/messages/{id}: where it stands. The answer is 202 with the message id (the outbox row),
which `carepost message evidence ID` and the status route take; the message goes out
through the consent gate and the outbox's one-off lane (messages/service.py).

Errors name fields by JSON pointer and never carry a value: the per-message data is PHI."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from carepost.api.context import Caller, guard
from carepost.api.idempotency import Once
from carepost.api.text_guard import NulFreeRoute
from carepost.messages.data import DataValue
from carepost.messages.service import ONE_OFF_CLASSES, PERMISSION, do_send_message, message_status

router = APIRouter(tags=["messages"], route_class=NulFreeRoute)


class SendMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="The recipient contact's id")
    template: str = Field(
        min_length=1, max_length=64, description="A template id, or a name (latest version)"
    )
    message_class: str = Field(
        max_length=16, description=f"One of {', '.join(ONE_OFF_CLASSES)} (never marketing)"
    )
    data: dict[Annotated[str, Field(max_length=64)], DataValue] = Field(
        default_factory=dict,
        description="A value for each `data_<name>` field the template declares, by <name>",
    )
    sender: str | None = Field(
        default=None, max_length=64, description="Sender profile (default: the only one)"
    )
    topic: str | None = Field(
        default=None, max_length=64, description="What an opt-out names (default: the class)"
    )


class Queued(BaseModel):
    id: str
    status: str


class Step(BaseModel):
    state: str
    at: str


class MessageState(BaseModel):
    id: str
    status: str
    reason: str | None
    attempts: int
    contact_id: str
    created_at: str
    updated_at: str
    timeline: list[Step]


@router.post(
    "/messages",
    status_code=202,
    response_model=Queued,
    summary="Send one treatment, operations or transactional message",
    **guard(PERMISSION),
)
def send_message(body: SendMessage, ctx: Caller, once: Once) -> Response:
    # MessageError and DataRejected become problems in api/service_errors.py.
    def act(session: Session) -> Queued:
        sent = do_send_message(
            session,
            ctx.workspace.keyring,
            principal=ctx.principal,
            contact_id=body.contact_id,
            template=body.template,
            message_class=body.message_class,
            data=body.data,
            sender=body.sender,
            topic=body.topic,
            at=ctx.clock(),
        )
        return Queued(id=sent.id, status=sent.status)

    answer = once.run(ctx, act, status=202)
    if answer.status_code == 202:  # a replay answers the first request's id again
        answer.headers["Location"] = f"/api/v1/messages/{orjson.loads(answer.body)['id']}"
    return answer


@router.get(
    "/messages/{message_id}",
    response_model=MessageState,
    summary="A one-off message's state and timeline (no PHI)",
    **guard(PERMISSION),
)
def get_message(message_id: str, ctx: Caller) -> MessageState:
    with ctx.transaction() as session:
        found = message_status(session, principal=ctx.principal, message_id=message_id)
    return MessageState.model_validate(found.as_dict())
