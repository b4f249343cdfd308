"""Templates: list (each name's newest version), read one with its versions, add a
version, and check one without saving. The save-time checks (an undeclared PHI field
with its name and line, PHI in a subject, CAN-SPAM for marketing) answer as 422
problems whose errors point at the part of the body at fault."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from carepost.api.context import Caller, guard
from carepost.api.idempotency import Once
from carepost.api.pagination import CursorParam, Limit, Page, after_id, page_of
from carepost.api.problems import Problem
from carepost.api.text_guard import NulFreeRoute
from carepost.content import service
from carepost.content.models import Template
from carepost.content.template import TemplateRejected, TemplateSpec

router = APIRouter(tags=["templates"], route_class=NulFreeRoute)

FieldName = Annotated[str, Field(min_length=1, max_length=64)]


class TemplateIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    message_class: str = Field(
        min_length=1, max_length=16, description="treatment, operations, transactional, ..."
    )
    subject: str = Field(min_length=1, max_length=998)
    html: str = Field(min_length=1, max_length=512_000)
    text: str | None = Field(None, max_length=512_000)
    phi_fields: list[FieldName] = Field(default_factory=list, max_length=64)
    secure_delivery: bool = False

    def spec(self) -> TemplateSpec:
        return TemplateSpec(
            name=self.name,
            subject=self.subject,
            html=self.html,
            message_class=self.message_class,
            phi_fields=tuple(self.phi_fields),
            text=self.text,
            secure_delivery=self.secure_delivery,
        )


class TemplateSummary(BaseModel):
    id: str  # of the newest version
    name: str
    version: int
    message_class: str
    phi_fields: list[str]
    secure_delivery: bool
    created_at: datetime


class TemplateOut(TemplateSummary):
    subject: str
    html: str
    text: str | None
    actor: str


class VersionOut(BaseModel):
    id: str
    version: int
    message_class: str
    created_at: datetime
    actor: str


class TemplateDetail(BaseModel):
    name: str
    latest: TemplateOut
    versions: list[VersionOut]


class Saved(BaseModel):
    id: str
    name: str
    version: int


class Checked(BaseModel):
    valid: bool


def _summary(row: Template) -> TemplateSummary:
    return TemplateSummary(
        id=row.id,
        name=row.name,
        version=row.version,
        message_class=row.message_class,
        phi_fields=row.phi_fields.split(),
        secure_delivery=row.secure_delivery,
        created_at=row.created_at,
    )


@router.get(
    "/templates",
    response_model=Page[TemplateSummary],
    summary="Templates (each name's newest version)",
    **guard("templates:read"),
)
def list_templates(
    ctx: Caller, limit: Limit = 50, cursor: CursorParam = None
) -> Page[TemplateSummary]:
    after = after_id(cursor)
    with ctx.transaction() as session:
        rows = service.template_page(session, after=after, limit=limit + 1, principal=ctx.principal)
        return page_of(rows, limit, lambda r: [r[0]], lambda r: _summary(r[1]))


@router.get(
    "/templates/{name}",
    response_model=TemplateDetail,
    summary="A template's newest version and the list of its versions",
    **guard("templates:read"),
)
def get_template(name: str, ctx: Caller) -> TemplateDetail:
    with ctx.transaction() as session:
        rows = service.template_versions(session, name, principal=ctx.principal)
        if not rows:
            raise Problem(404, "not-found", "no template with that name")
        latest = rows[0]
        return TemplateDetail(
            name=name,
            latest=TemplateOut(
                **_summary(latest).model_dump(),
                subject=latest.subject,
                html=latest.html,
                text=latest.text,
                actor=latest.actor,
            ),
            versions=[
                VersionOut(
                    id=r.id,
                    version=r.version,
                    message_class=r.message_class,
                    created_at=r.created_at,
                    actor=r.actor,
                )
                for r in rows
            ],
        )


@router.post(
    "/templates",
    response_model=Saved,
    status_code=201,
    summary="Check a template and save it as the next version of its name",
    **guard("templates:write"),
)
def add_template(body: TemplateIn, ctx: Caller, once: Once) -> Response:
    def act(session: Session) -> Saved:
        row = service.add_template(
            session,
            body.spec(),
            actor=ctx.principal.actor,
            principal=ctx.principal,
            clock=ctx.clock,
        )
        return Saved(id=row.id, name=row.name, version=row.version)

    return once.run(ctx, act, status=201)


@router.post(
    "/templates/check",
    response_model=Checked,
    summary="Check a template against every save-time rule; save nothing",
    **guard("templates:read"),
)
def check_template(body: TemplateIn, ctx: Caller) -> Checked:
    problems = service.check_template(body.spec(), principal=ctx.principal)
    if problems:
        raise TemplateRejected(problems)
    return Checked(valid=True)
