"""Cursor pagination: `?limit=..&cursor=..` answers `{"items": [...], "next_cursor": ...}`.

A cursor is the base64url of the last item's sort key (a JSON list of ids, sequence
numbers or times; never PHI), opaque to callers. A route fetches `limit + 1` rows after
the decoded key and hands them to `page`, which cuts the extra row off and makes the
next cursor from the last row kept; `next_cursor` is null on the last page.

    @router.get("/things", response_model=Page[Thing])
    def things(ctx: Caller, limit: Limit = 100, cursor: CursorParam = None) -> Page[Thing]:
        after = decode_cursor(cursor, 1)
        rows = fetch(after, limit + 1)
        return page([Thing(...) for r in rows], limit, lambda t: [t.id])
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel

from carepost.api.problems import Problem

T = TypeVar("T")
R = TypeVar("R")
KeyPart = str | int | float | None

MAX_LIMIT = 500
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1 to 500).")]
CursorParam = Annotated[
    str | None,
    Query(
        max_length=512,
        pattern=r"^[A-Za-z0-9_-]*$",
        description="The `next_cursor` of the previous page; omit for the first page.",
    ),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(key: Sequence[KeyPart]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).rstrip(b"=").decode()


def decode_cursor(cursor: str | None, arity: int) -> list[KeyPart] | None:
    """The sort key in `cursor` (None for the first page); a cursor this API did not make
    is a 400 naming the `cursor` parameter."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = orjson.loads(raw)
    except (binascii.Error, ValueError):
        key = None
    if (
        not isinstance(key, list)
        or len(key) != arity
        or not all(isinstance(k, str | int | float) or k is None for k in key)
    ):
        raise Problem(
            400,
            "invalid-cursor",
            "cursor is not a cursor this API gave out",
            errors=[{"pointer": "/query/cursor", "detail": "not a valid cursor"}],
        )
    return key


def page(items: Sequence[T], limit: int, key_of: Callable[[T], Sequence[KeyPart]]) -> Page[T]:
    """`items` fetched with `limit + 1`: the page and the cursor after it."""
    return page_of(items, limit, key_of, lambda item: item)


def page_of(
    rows: Sequence[R],
    limit: int,
    key_of: Callable[[R], Sequence[KeyPart]],
    item: Callable[[R], T],
) -> Page[T]:
    """`page` for rows whose sort key is not a field of the item shown (a template's
    first version id, say): `item` turns each kept row into what the page carries."""
    kept = list(rows[:limit])
    more = len(rows) > limit
    return Page[T](
        items=[item(r) for r in kept],
        next_cursor=encode_cursor(key_of(kept[-1])) if more else None,
    )


def after_id(cursor: str | None) -> str | None:
    """The row id a one-part cursor resumes after (the resource lists, keyed on ids)."""
    key = decode_cursor(cursor, 1)
    return None if key is None else str(key[0])
