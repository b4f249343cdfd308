"""Where a tracked link goes: the destination stored for a message's template at link
index i. Templates are immutable versions, so a template's links are worked out once per
process (by the same compile step the worker used to number them) and cached. The click
endpoint redirects only to these, never to anything taken from the request."""

from __future__ import annotations

from sqlalchemy.orm import Session

from carepost.content.models import Template
from carepost.content.service import spec_of
from carepost.content.template import compile_template

# Template versions in use at once are few; the bound only guards a long-lived process.
_CACHE_LIMIT = 4096
_cache: dict[str, tuple[str, ...]] = {}


def links_of(session: Session, template_id: str) -> tuple[str, ...]:
    """The destinations of a template's tracked links, by link index (KeyError if the
    template does not exist)."""
    cached = _cache.get(template_id)
    if cached is None:
        row = session.get(Template, template_id)
        if row is None:
            raise KeyError(template_id)
        cached = compile_template(spec_of(row)).links
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[template_id] = cached
    return cached
