"""/auth: login, refresh, logout, me."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse

from authsvc.api import browser
from authsvc.api.browser import CookieMode, WithCookieMode
from authsvc.api.deps import (
    Bearer,
    Context,
    OptionalBearer,
    ReadDB,
    State,
    TokenContext,
    WriteDB,
    with_dpop,
    write_scope,
)
from authsvc.api.errors import error_responses
from authsvc.api.schemas import (
    ErrorResponse,
    LoginRequest,
    LogoutRequest,
    MeResponse,
    MfaRequiredResponse,
    RefreshRequest,
    TokenResponse,
)
from authsvc.errors import NO_STORE, InvalidRefreshToken
from authsvc.services.issuer import TokenPair, first_party

router = APIRouter(prefix="/auth", tags=["auth"])

_ERRORS = error_responses(400, 401, 413, 429, 503)
# Routes that can carry the refresh token in the browser-mode cookie refuse a request without
# the CSRF checks with 403 csrf_rejected (api/browser.py).
_COOKIE_ERRORS = error_responses(400, 401, 403, 413, 429, 503)
# With TOTP on, the right password answers 401 mfa_required with an mfa_token (api/mfa.py).
_LOGIN_ERRORS = error_responses(
    400, 401, 403, 413, 429, 503, models={401: ErrorResponse | MfaRequiredResponse}
)


@router.post("/login", response_model=TokenResponse, responses=_LOGIN_ERRORS)
async def login(
    cookie_mode: CookieMode,
    body: LoginRequest,
    state: State,
    db: WriteDB,
    ctx: TokenContext,
) -> Any:
    pair = await state.login.login(
        db, body.username, body.password, ctx, first_party(ctx), second_factor="challenge"
    )
    if cookie_mode:
        return browser.cookie_response(pair)
    return token_response(pair)


@router.post("/refresh", response_model=TokenResponse, responses=_COOKIE_ERRORS)
async def refresh(
    context: WithCookieMode,
    request: Request,
    body: RefreshRequest | None = None,
) -> Any:
    # The hottest write path: one dependency for the request's context, and the write scope
    # entered here rather than as a dependency; on PostgreSQL a live token usually rotates
    # without the session being used at all (store/fastlane.py), so it is never opened.
    token = body.refresh_token if body is not None else browser.cookie_token(request)
    if token is None:
        # No credential at all, like an unknown one: 401 (the body itself is optional, since
        # browser mode carries the token in a cookie).
        raise InvalidRefreshToken("No refresh token was given.")
    state = context.route.state
    ctx = await with_dpop(request, state, context.route.ctx)
    async with write_scope(state.database) as db:
        pair = await state.refresh.refresh(db, token, ctx, first_party(ctx))
    # The answer goes back the way the token came, unless the request asks for the cookie.
    if context.cookie_mode and (body is None or browser.wants_cookie(request, state.settings)):
        return browser.cookie_response(pair)
    return token_response(pair)


def token_response(pair: TokenPair) -> Response:
    """The JSON token response (TokenResponse's fields, in its order), rendered here: FastAPI's
    validation and serialization of a response model cost more than five fields are worth."""
    return JSONResponse(
        {
            "access_token": pair.access_token,
            "token_type": pair.token_type,
            "expires_in": pair.expires_in,
            "refresh_token": pair.refresh_token,
            "refresh_expires_in": pair.refresh_expires_in,
        },
        # RFC 6749 section 5.1: responses carrying tokens must not be cached.
        headers=NO_STORE,
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=_COOKIE_ERRORS)
async def logout(
    cookie_mode: CookieMode,
    request: Request,
    state: State,
    db: WriteDB,
    ctx: Context,
    bearer: OptionalBearer,
    body: LogoutRequest | None = None,
) -> Response:
    body = body or LogoutRequest()
    refresh_token = body.refresh_token or browser.cookie_token(request)
    await state.logout.logout(
        db,
        ctx,
        access_token=bearer,
        refresh_token=refresh_token,
        scope=body.scope,
    )
    response = Response(status_code=status.HTTP_204_NO_CONTENT, headers=NO_STORE)
    if cookie_mode:
        browser.clear_cookie(response)
    return response


@router.get("/me", response_model=MeResponse, responses=_ERRORS)
async def me(state: State, db: ReadDB, ctx: Context, token: Bearer) -> MeResponse:
    principal = await state.access.me(db, token, ctx)
    return MeResponse(
        id=principal.user_id,
        username=principal.username,
        roles=principal.roles,
        session_id=principal.claims.sid,
        scope=principal.claims.scope,
    )
