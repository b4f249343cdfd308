"""Template use cases: a template is saved only when it passes every save-time rule."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.contacts.store import new_id
from carepost.content.models import Template
from carepost.content.template import TemplateSpec, validate


def add_template(
    session: Session, spec: TemplateSpec, *, actor: Actor, clock: Clock = system_clock
) -> Template:
    """Check, then save as the next version of `spec.name`. Raises TemplateRejected."""
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
