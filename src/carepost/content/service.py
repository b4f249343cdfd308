"""Template use cases: a template is saved only when it passes every save-time rule."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.contacts.store import new_id
from carepost.content.models import Template
from carepost.content.template import TemplateProblem, TemplateSpec, check, validate
from carepost.staff.principal import Principal


def _require(principal: Principal | None, *permissions: str) -> None:
    # None is the trusted caller (the command line on the server, workers).
    if principal is not None:
        principal.require(*permissions)


def add_template(
    session: Session,
    spec: TemplateSpec,
    *,
    actor: Actor,
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> Template:
    """Check, then save as the next version of `spec.name`. Raises TemplateRejected."""
    _require(principal, "templates:write")
    validate(spec)
    latest = session.scalar(select(func.max(Template.version)).where(Template.name == spec.name))
    row = Template(
        id=new_id(),
        name=spec.name,
        version=(latest or 0) + 1,
        message_class=spec.message_class,
        subject=spec.subject,
        html=spec.html,
        text=spec.text,
        phi_fields=" ".join(spec.phi_fields),
        secure_delivery=spec.secure_delivery,
        created_at=clock(),
        actor=actor.id,
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="content.template_saved",
        subjects=[row.id],
        details={
            "name": spec.name,
            "version": row.version,
            "message_class": spec.message_class,
            "phi_fields": list(spec.phi_fields),
        },
        clock=clock,
    )
    return row


def latest_template(session: Session, name: str) -> Template | None:
    return session.scalars(
        select(Template).where(Template.name == name).order_by(Template.version.desc()).limit(1)
    ).first()


def spec_of(row: Template) -> TemplateSpec:
    """A stored template version as the spec the compile step takes."""
    return TemplateSpec(
        name=row.name,
        subject=row.subject,
        html=row.html,
        text=row.text,
        message_class=row.message_class,
        phi_fields=tuple(row.phi_fields.split()),
        secure_delivery=row.secure_delivery,
    )


def check_template(
    spec: TemplateSpec, *, principal: Principal | None = None
) -> list[TemplateProblem]:
    """Every save-time problem of `spec`, saving nothing."""
    _require(principal, "templates:read")
    return check(spec)


def template_page(
    session: Session, *, after: str | None, limit: int, principal: Principal | None = None
) -> list[tuple[str, Template]]:
    """Up to `limit` templates (each name's newest version) ordered by the id of the
    name's first version, after that id: (first version id, newest version) pairs."""
    _require(principal, "templates:read")
    first = func.min(Template.id)
    query = select(first, Template.name).group_by(Template.name).order_by(first).limit(limit)
    if after is not None:
        query = query.having(first > after)
    keys = [(str(k), str(n)) for k, n in session.execute(query)]
    newest: dict[str, Template] = {}
    if keys:
        rows = session.scalars(
            select(Template)
            .where(Template.name.in_([n for _, n in keys]))
            .order_by(Template.name, Template.version)
        )
        newest = {r.name: r for r in rows}
    return [(k, newest[n]) for k, n in keys]


def template_versions(
    session: Session, name: str, *, principal: Principal | None = None
) -> list[Template]:
    """Every version of template `name`, newest first (empty: no such template)."""
    _require(principal, "templates:read")
    return list(
        session.scalars(
            select(Template).where(Template.name == name).order_by(Template.version.desc())
        )
    )
