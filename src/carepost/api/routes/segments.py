"""Segments: list, count a rule, save a version (or a static list), read one with its
versions and count, and preview members with their PHI (a PHI read: `phi:read` and an
`X-Purpose`, through contacts/phi.py). Counts come from the process's one snapshot
(api/segment_engine.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.orm import Session

from carepost.api.context import ApiContext, Caller, guard
from carepost.api.idempotency import Once
from carepost.api.pagination import CursorParam, Limit, Page, after_id, page_of
from carepost.api.params import Rfc3339
from carepost.api.problems import Problem
from carepost.api.purpose import Purpose
from carepost.api.segment_engine import SharedSegments
from carepost.api.text_guard import NulFreeRoute
from carepost.contacts import phi
from carepost.segments import ast as A
from carepost.segments import service
from carepost.segments.parser import parse
from carepost.segments.printer import print_rule

router = APIRouter(tags=["segments"], route_class=NulFreeRoute)
PREVIEW_MAX = 100

SegmentName = Annotated[str, Field(min_length=1, max_length=service.NAME_MAX)]


def shared(request: Request) -> SharedSegments:
    segments: SharedSegments = request.app.state.segments
    return segments


class SegmentOut(BaseModel):
    id: str
    name: str
    kind: str
    version: int
    rule: str | None
    static_members: int | None
    updated_at: datetime


def _out(s: service.SegmentSummary) -> SegmentOut:
    return SegmentOut(
        id=s.id,
        name=s.name,
        kind=s.kind,
        version=s.version,
        rule=s.rule,
        static_members=s.members,
        updated_at=s.updated_at,
    )


@router.get(
    "/segments",
    response_model=Page[SegmentOut],
    summary="Saved segments and static lists",
    **guard("segments:read"),
)
def list_segments(ctx: Caller, limit: Limit = 50, cursor: CursorParam = None) -> Page[SegmentOut]:
    after = after_id(cursor)
    with ctx.transaction() as session:
        rows = service.segment_page(session, after=after, limit=limit + 1, principal=ctx.principal)
    return page_of(rows, limit, lambda r: [r.id], _out)


class CountIn(BaseModel):
    rule: str = Field(
        min_length=1, max_length=20_000, description="A rule in the segment language."
    )
    at: Rfc3339 | None = Field(None, description="Evaluate at this time; default now.")


class CountOut(BaseModel):
    rule: str  # the rule as the language prints it
    at: datetime
    count: int
    contacts: int


@router.post(
    "/segments/count",
    response_model=CountOut,
    summary="Count the contacts a rule matches",
    **guard("segments:read"),
)
def count_rule(body: CountIn, ctx: Caller, request: Request) -> CountOut:
    node = parse(body.rule)
    at = body.at or ctx.at
    n, total = shared(request).use(
        lambda e: (e.count(node, at, principal=ctx.principal), e.snapshot.n)
    )
    return CountOut(rule=print_rule(node), at=at, count=n, contacts=total)


class SaveIn(BaseModel):
    """Exactly one of `rule` (a dynamic segment: a new version when it differs) and
    `members` (a static list: the whole list of contact ids, replacing it)."""

    rule: str | None = Field(None, min_length=1, max_length=20_000)
    members: list[Annotated[str, Field(min_length=1, max_length=32)]] | None = Field(
        None, max_length=100_000
    )
    description: str = Field("", max_length=2000)

    @model_validator(mode="after")
    def one_kind(self) -> SaveIn:
        if (self.rule is None) == (self.members is None):
            raise ValueError("give exactly one of rule and members")
        return self


class SaveOut(BaseModel):
    id: str
    name: str
    kind: str
    version: int
    changed: bool
    static_members: int | None = None


@router.put(
    "/segments/{name}",
    response_model=SaveOut,
    summary="Save a segment's rule (a new version) or a static list's members",
    **guard("segments:write"),
)
def save_segment(name: str, body: SaveIn, ctx: Caller) -> SaveOut:
    _check_name(name)
    with ctx.transaction() as session:
        if body.rule is not None:
            seg, version, changed = service.save_segment(
                session,
                name,
                body.rule,
                actor=ctx.principal.actor,
                description=body.description,
                principal=ctx.principal,
                clock=ctx.clock,
            )
            return SaveOut(
                id=seg.id, name=seg.name, kind="dynamic", version=version, changed=changed
            )
        assert body.members is not None
        seg = service.save_static_list(
            session,
            name,
            body.members,
            actor=ctx.principal.actor,
            description=body.description,
            principal=ctx.principal,
            clock=ctx.clock,
        )
        return SaveOut(
            id=seg.id,
            name=seg.name,
            kind="static",
            version=0,
            changed=True,
            static_members=len(set(body.members)),
        )


class MembersIn(BaseModel):
    add: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list, max_length=10_000
    )
    remove: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list, max_length=10_000
    )


class MembersOut(BaseModel):
    added: int
    removed: int
    members: int


@router.post(
    "/segments/{name}/members",
    response_model=MembersOut,
    summary="Add and remove members of a static list",
    **guard("segments:write"),
)
def change_members(name: str, body: MembersIn, ctx: Caller, once: Once) -> Response:
    _check_name(name)

    def act(session: Session) -> MembersOut:
        got = service.do_change_static_members(
            session,
            name,
            add=body.add,
            remove=body.remove,
            actor=ctx.principal.actor,
            principal=ctx.principal,
            clock=ctx.clock,
        )
        return MembersOut(added=got.added, removed=got.removed, members=got.members)

    # A retry after a lost answer gets the first count of added members, not 0.
    return once.run(ctx, act)


class VersionOut(BaseModel):
    version: int
    rule: str
    created_at: datetime
    created_by: str


class SegmentDetail(SegmentOut):
    description: str
    versions: list[VersionOut]
    count: int
    counted_at: datetime


@router.get(
    "/segments/{name}",
    response_model=SegmentDetail,
    summary="A segment: its rule, every version and its member count now",
    **guard("segments:read"),
)
def get_segment(name: str, ctx: Caller, request: Request) -> SegmentDetail:
    _check_name(name)
    node, summary, versions, description = _load(ctx, name)
    rule_name = name if summary.kind == "dynamic" else None
    n = shared(request).use(
        lambda e: e.count(node, ctx.at, name=rule_name, principal=ctx.principal)
    )
    return SegmentDetail(
        **_out(summary).model_dump(),
        description=description,
        versions=[VersionOut(**v.__dict__) for v in versions],
        count=n,
        counted_at=ctx.at,
    )


class PreviewIn(BaseModel):
    limit: int = Field(10, ge=1, le=PREVIEW_MAX, description="How many members to show.")
    at: Rfc3339 | None = None


class MemberOut(BaseModel):
    id: str
    record: dict[str, object]


class PreviewOut(BaseModel):
    segment: str
    members: int
    shown: list[MemberOut]


@router.post(
    "/segments/{name}/preview",
    response_model=PreviewOut,
    summary="The first members and their records (a PHI read: audited with X-Purpose)",
    **guard("segments:read", "phi:read"),
)
def preview_segment(
    name: str,
    ctx: Caller,
    request: Request,
    purpose: Purpose,
    body: PreviewIn | None = None,
) -> PreviewOut:
    _check_name(name)
    asked = body or PreviewIn()
    at = asked.at or ctx.at
    node, summary, _, _ = _load(ctx, name)
    rule_name = name if summary.kind == "dynamic" else None
    ids = shared(request).use(
        lambda e: e.members(node, at, name=rule_name, principal=ctx.principal)
    )
    with ctx.transaction() as session:
        views = phi.read_contacts(
            session,
            ctx.workspace.keyring,
            ids[: asked.limit],
            actor=ctx.principal.actor,
            purpose=purpose,
            action="segments.preview",
            details={"segment": name, "members": len(ids)},
            principal=ctx.principal,
            clock=ctx.clock,
        )
    return PreviewOut(
        segment=name,
        members=len(ids),
        shown=[MemberOut(id=v.id, record=v.record) for v in views],
    )


def _check_name(name: str) -> None:
    if not name.strip() or len(name) > service.NAME_MAX:
        raise Problem(
            422,
            "invalid-request",
            "the request has invalid fields",
            errors=[{"pointer": "/path/name", "detail": f"1 to {service.NAME_MAX} characters"}],
        )


def _load(
    ctx: ApiContext, name: str
) -> tuple[A.Node, service.SegmentSummary, list[service.VersionInfo], str]:
    with ctx.transaction() as session:
        summary, versions = service.segment_versions(session, name, principal=ctx.principal)
        seg = service.get_segment(session, name)
        return service.segment_node(session, seg), summary, versions, seg.description
