"""Shared parameter types: ids are carepost's 32 lower-case hex characters (store.new_id),
the only thing a path or query string carries (never a name, address or date)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import AwareDatetime, BeforeValidator, Field

ID_PATTERN = r"^[0-9a-f]{32}$"

IdField = Annotated[str, Field(pattern=ID_PATTERN, description="a carepost id (32 hex)")]
IdPath = Annotated[str, Path(pattern=ID_PATTERN, description="a carepost id (32 hex)")]


def _rfc3339_text(value: object) -> object:
    # pydantic would also take a number (or numeric text) as Unix seconds; the document
    # says an RFC 3339 date-time, so only that is accepted.
    if isinstance(value, str) and _RFC3339.match(value):
        return value
    if isinstance(value, datetime):
        return value
    raise ValueError("an RFC 3339 date-time with a UTC offset, e.g. 2026-11-24T09:00:00Z")


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})$")

Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]
