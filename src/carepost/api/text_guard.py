"""No NUL character (U+0000) gets past the API's door.

PostgreSQL's text types cannot hold NUL, so a name, template or key carrying one failed
deep in a query as a 500 on that engine while SQLite took it. Nothing carepost stores
has a use for it, so every route checks its path, query and JSON body up front and
answers 422 naming where the character is (never the value: it may be PHI)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

NUL = "\x00"
MESSAGE = "must not contain a NUL character (U+0000)"


def nul_locations(value: Any, where: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    """Where in a parsed JSON value a key or a string holds NUL (FastAPI's loc shape)."""
    if isinstance(value, str):
        if NUL in value:
            yield where
    elif isinstance(value, dict):
        for key, item in value.items():
            if NUL in key:
                yield (*where, key.replace(NUL, "\\u0000"))
            yield from nul_locations(item, (*where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from nul_locations(item, (*where, index))


async def request_nul_locations(request: Request) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = [
        ("path", name) for name, value in request.path_params.items() if NUL in str(value)
    ]
    found += [("query", name) for name, value in request.query_params.multi_items() if NUL in value]
    if "json" in request.headers.get("content-type", ""):
        body = await request.body()  # Starlette keeps it; the handler reads it again
        if b"\\u0000" in body:  # the only way JSON text can carry NUL
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                return found  # FastAPI answers the malformed body itself
            found += list(nul_locations(parsed, ("body",)))
    return found


class NulFreeRoute(APIRoute):
    """An APIRoute that answers 422 before its handler when the request holds NUL."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            found = await request_nul_locations(request)
            if found:
                raise RequestValidationError(
                    [{"loc": loc, "msg": MESSAGE, "type": "nul_character"} for loc in found]
                )
            return await handler(request)

        return checked
