"""Browser (SPA) mode: the refresh token in an HttpOnly `__Host-` cookie, with CSRF checks.

A request opts in with `X-Authsvc-Token-Transport: cookie` (or the server defaults to it with
AUTHSVC_REFRESH_TOKEN_TRANSPORT=cookie). Every request that carries the cookie, or asks for it,
must come from an allowed Origin and carry `X-Authsvc-CSRF: 1`: a header a cross-site form
cannot set and a cross-origin script cannot send without a CORS preflight we do not grant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse

from authsvc.api.deps import RouteContext, State, route_context
from authsvc.config import Settings
from authsvc.errors import NO_STORE, CSRFRejected
from authsvc.services.issuer import TokenPair

REFRESH_COOKIE = "__Host-authsvc_rt"
TRANSPORT_HEADER = "x-authsvc-token-transport"
CSRF_HEADER = "x-authsvc-csrf"


def wants_cookie(request: Request, settings: Settings) -> bool:
    asked = request.headers.get(TRANSPORT_HEADER)
    if asked is not None:
        return asked.strip().lower() == "cookie"
    return settings.refresh_token_transport == "cookie"  # noqa: S105 - a mode name


def check_csrf(request: Request, settings: Settings) -> None:
    origin = request.headers.get("origin")
    # RFC 6454 section 7: an Origin is scheme://host[:port], compared exactly.
    if origin is None or origin not in settings.allowed_origin_set:
        raise CSRFRejected("The request's Origin is not allowed.")
    if request.headers.get(CSRF_HEADER) != "1":
        raise CSRFRejected(f"The {CSRF_HEADER} header is required.")


def cookie_mode(request: Request, settings: Settings) -> bool:
    """True when the refresh token travels in the cookie; checks CSRF first (as a dependency
    this runs before the body is validated, so a cross-site form post gets 403, not 400)."""
    mode = REFRESH_COOKIE in request.cookies or wants_cookie(request, settings)
    if mode:
        check_csrf(request, settings)
    return mode


async def _cookie_mode(request: Request, state: State) -> bool:
    # `async def` though it never awaits: FastAPI runs a plain `def` dependency in the thread
    # pool, which cost login, refresh and logout a thread hop each (see api/deps.py).
    return cookie_mode(request, state.settings)


CookieMode = Annotated[bool, Depends(_cookie_mode)]


@dataclass(frozen=True, slots=True)
class CookieContext:
    route: RouteContext
    cookie_mode: bool


async def _cookie_context(request: Request) -> CookieContext:
    """The request context and CookieMode as one dependency, for the refresh route (see
    deps.route_context)."""
    route = route_context(request)
    return CookieContext(route, cookie_mode(request, route.state.settings))


WithCookieMode = Annotated[CookieContext, Depends(_cookie_context)]


def cookie_token(request: Request) -> str | None:
    return request.cookies.get(REFRESH_COOKIE) or None


def cookie_response(pair: TokenPair) -> JSONResponse:
    """The token response without the refresh token, which goes into the cookie."""
    response = JSONResponse(
        {
            "access_token": pair.access_token,
            "token_type": pair.token_type,
            "expires_in": pair.expires_in,
            "refresh_expires_in": pair.refresh_expires_in,
        },
        headers=NO_STORE,
    )
    response.set_cookie(
        REFRESH_COOKIE,
        pair.refresh_token,
        max_age=pair.refresh_expires_in,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return response


def clear_cookie(response: Response) -> None:
    response.delete_cookie(REFRESH_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
