"""/auth/passkeys: register a passkey, log in with one, list and remove one's own."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse

from authsvc.api import browser
from authsvc.api.auth import token_response
from authsvc.api.browser import CookieMode
from authsvc.api.deps import Bearer, Context, ReadDB, State, TokenContext, WriteDB
from authsvc.api.errors import error_responses
from authsvc.api.schemas import (
    PasskeyInfo,
    PasskeyLoginRequest,
    PasskeyRegisterRequest,
    PasskeysResponse,
    TokenResponse,
)
from authsvc.errors import NO_STORE

router = APIRouter(prefix="/auth/passkeys", tags=["passkeys"])

_ERRORS = error_responses(400, 401, 404, 413, 429, 503)
# Browser mode (the tokens in a cookie) refuses a request without the CSRF checks with 403
# csrf_rejected (api/browser.py).
_COOKIE_ERRORS = error_responses(400, 401, 403, 404, 413, 429, 503)


def _options(options: dict[str, Any]) -> Response:
    # A challenge is single-use: never cached.
    return JSONResponse(options, headers=NO_STORE)


@router.post("/register/options", responses=_ERRORS)
async def register_options(state: State, db: WriteDB, ctx: Context, token: Bearer) -> Response:
    """PublicKeyCredentialCreationOptions for navigator.credentials.create()."""
    return _options(await state.passkeys.register_options(db, token, ctx))


@router.post(
    "/register/verify",
    status_code=status.HTTP_201_CREATED,
    response_model=PasskeyInfo,
    responses=_ERRORS,
)
async def register_verify(
    body: PasskeyRegisterRequest, state: State, db: WriteDB, ctx: Context, token: Bearer
) -> PasskeyInfo:
    view = await state.passkeys.register_verify(db, token, body.credential, body.name, ctx)
    return PasskeyInfo(**vars(view))


@router.post("/login/options", responses=_ERRORS)
async def login_options(state: State, db: WriteDB, ctx: Context) -> Response:
    """PublicKeyCredentialRequestOptions for navigator.credentials.get() (discoverable
    credentials: no username asked, no credential listed)."""
    return _options(await state.passkeys.login_options(db, ctx))


@router.post("/login/verify", response_model=TokenResponse, responses=_COOKIE_ERRORS)
async def login_verify(
    cookie_mode: CookieMode,
    body: PasskeyLoginRequest,
    state: State,
    db: WriteDB,
    ctx: TokenContext,
) -> Any:
    pair = await state.passkeys.login_verify(db, body.credential, ctx)
    if cookie_mode:
        return browser.cookie_response(pair)
    return token_response(pair)


@router.get("", response_model=PasskeysResponse, responses=_ERRORS)
async def list_passkeys(state: State, db: ReadDB, ctx: Context, token: Bearer) -> PasskeysResponse:
    views = await state.passkeys.list(db, token, ctx)
    return PasskeysResponse(passkeys=[PasskeyInfo(**vars(v)) for v in views])


@router.delete("/{passkey_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def remove_passkey(
    passkey_id: str, state: State, db: WriteDB, ctx: Context, token: Bearer
) -> Response:
    await state.passkeys.remove(db, token, passkey_id, ctx)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=NO_STORE)
