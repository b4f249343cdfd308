"""The staff sign-in's and the portal's cookies, made one way: `__Host-` names (Secure, the
whole site, no Domain), HttpOnly, SameSite=Strict. Only the DEV_INSECURE setting (plain
http) drops the prefix and Secure, since browsers refuse both over http."""

from __future__ import annotations

from fastapi import Request, Response

from carepost.workspace import Workspace


def _insecure(request: Request) -> bool:
    ws: Workspace = request.app.state.workspace
    return ws.settings.dev_insecure


def name(request: Request, base: str) -> str:
    return base if _insecure(request) else f"__Host-{base}"


def read(request: Request, base: str) -> str:
    return request.cookies.get(name(request, base), "")


def put(request: Request, response: Response, base: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name(request, base),
        value,
        max_age=max_age,
        path="/",
        secure=not _insecure(request),
        httponly=True,
        samesite="strict",
    )


def clear(request: Request, response: Response, base: str) -> None:
    response.delete_cookie(
        name(request, base),
        path="/",
        secure=not _insecure(request),
        httponly=True,
        samesite="strict",
    )
