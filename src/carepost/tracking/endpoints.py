"""The open pixel and the click redirect: `GET|HEAD /t/o/<token>` and `/t/c/<token>`.

A small raw ASGI app rather than FastAPI routes: it answers thousands of requests a second
and each one is a path split, an HMAC and a wait for the batch write, so the framework's
per-request machinery (dependency resolution, middleware wrappers, response objects) would
be most of the cost. It is mounted at /t in `carepost serve`'s app and runs alone under
`carepost tracking serve`; it keeps no state a second process would need (the database
has it all), so any number of them can run.

What a request gets:
- a valid open token: 200 and a 43-byte transparent GIF, never cached;
- a valid click token: 302 to the destination stored for that message's template at
  that link index (looked up from the database, never taken from the request: no open
  redirect, whatever the query string or path says);
- the honeypot's click token (index = the template's number of links): 200 and a blank page;
- a forged, altered or malformed token, an unknown message or a link index out of
  range: 404 with a fixed body, nothing stored;
- the database failing: 503 (nothing was stored; the client may retry).
A response is sent only after the event's batch committed (tracking/ingest.py). HEAD and
prefetch requests get the same answer; the classifier calls them machines. Bodies and
headers carry no PHI: a token holds only the outbox id, and nothing is echoed back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from carepost.clock import Clock, system_clock
from carepost.content.tokens import TokenSigner
from carepost.tracking.ingest import PURPOSE_HEADERS, BatchWriter, Outcome, RawEvent

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The smallest transparent GIF: 1x1, one transparent palette entry.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
assert len(PIXEL) == 43
NOT_FOUND = b"not found\n"
UNAVAILABLE_BODY = b"try again later\n"
NOT_ALLOWED = b"method not allowed\n"
BLANK_PAGE = b"<!doctype html><title></title>\n"

_SECURITY = [
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # The token is in the path: the next site must not see it.
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store, private"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]


def _headers(content_type: bytes, body: bytes, *extra: tuple[bytes, bytes]) -> list[Any]:
    return [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode("ascii")),
        *_SECURITY,
        *extra,
    ]


_PIXEL_HEADERS = _headers(b"image/gif", PIXEL)
_REDIRECT_HEADERS = _headers(b"text/plain; charset=utf-8", b"")
_BLANK_HEADERS = _headers(b"text/html; charset=utf-8", BLANK_PAGE)
_NOT_FOUND_HEADERS = _headers(b"text/plain; charset=utf-8", NOT_FOUND)
_UNAVAILABLE_HEADERS = _headers(
    b"text/plain; charset=utf-8", UNAVAILABLE_BODY, (b"retry-after", b"1")
)
_NOT_ALLOWED_HEADERS = _headers(b"text/plain; charset=utf-8", NOT_ALLOWED, (b"allow", b"GET, HEAD"))

_PURPOSE = frozenset(name.encode("ascii") for name in PURPOSE_HEADERS)
OPEN_PREFIX = "/t/o/"
CLICK_PREFIX = "/t/c/"
BARE_PREFIX = "/t/bare/"


class TrackingApp:
    """The ASGI app. `bare_route` adds /t/bare/<anything>: the pixel with no token check
    and no write, the benchmark's baseline on the same server (setting
    CAREPOST_TRACKING_BENCHMARK_BARE_ROUTE; never on in production)."""

    def __init__(
        self,
        signer: TokenSigner,
        writer: BatchWriter,
        *,
        clock: Clock = system_clock,
        bare_route: bool = False,
    ) -> None:
        self.signer = signer
        self.writer = writer
        self.clock = clock
        self.bare_route = bare_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, send: Send) -> None:
        path: str = scope["path"]
        if path.startswith(CLICK_PREFIX):
            kind, token = "click", path[len(CLICK_PREFIX) :]
        elif path.startswith(OPEN_PREFIX):
            kind, token = "open", path[len(OPEN_PREFIX) :]
        elif self.bare_route and path.startswith(BARE_PREFIX):
            await _answer(send, 200, _PIXEL_HEADERS, PIXEL, scope["method"] == "HEAD")
            return
        else:
            await _answer(send, 404, _NOT_FOUND_HEADERS, NOT_FOUND, scope["method"] == "HEAD")
            return
        method: str = scope["method"]
        head = method == "HEAD"
        if method != "GET" and not head:
            await _answer(send, 405, _NOT_ALLOWED_HEADERS, NOT_ALLOWED, False)
            return
        ref = self.signer.verify(token)
        if ref is None or ref.kind != kind:
            await _answer(send, 404, _NOT_FOUND_HEADERS, NOT_FOUND, head)
            return
        user_agent = ""
        purpose: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name in _PURPOSE:
                purpose[name.decode("ascii")] = value.decode("latin-1")
        client = scope.get("client")
        raw = RawEvent(
            message_id=ref.message_id,
            kind=ref.kind,
            link_index=ref.link_index,
            method=method,
            user_agent=user_agent,
            ip=client[0] if client else "",
            purpose=purpose,
            at=self.clock(),
        )
        outcome = await self.writer.submit(raw)
        await _respond(send, outcome, head)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.writer.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def close(self) -> None:
        await self.writer.close()


async def _respond(send: Send, outcome: Outcome, head: bool) -> None:
    if outcome.status == "recorded":
        if outcome.location is not None:
            headers = [*_REDIRECT_HEADERS, (b"location", outcome.location)]
            await _answer(send, 302, headers, b"", head)
        elif outcome.honeypot:
            await _answer(send, 200, _BLANK_HEADERS, BLANK_PAGE, head)
        else:
            await _answer(send, 200, _PIXEL_HEADERS, PIXEL, head)
    elif outcome.status == "unknown":
        await _answer(send, 404, _NOT_FOUND_HEADERS, NOT_FOUND, head)
    else:
        await _answer(send, 503, _UNAVAILABLE_HEADERS, UNAVAILABLE_BODY, head)


async def _answer(send: Send, status: int, headers: list[Any], body: bytes, head: bool) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
