"""/auth/mfa: the caller's TOTP second factor (enrol, confirm, disable) and the second step of
a sign-in (passkey options, verify). The rules are services/mfa.py's and services/login.py's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse

from authsvc.api import browser
from authsvc.api.auth import token_response
from authsvc.api.browser import CookieMode
from authsvc.api.deps import Bearer, Context, State, TokenContext, WriteDB
from authsvc.api.errors import error_responses
from authsvc.api.schemas import (
    MfaToken,
    MfaVerifyRequest,
    RecoveryCodes,
    SecondFactor,
    TokenResponse,
    TotpCode,
    TotpEnrollment,
)
from authsvc.errors import NO_STORE
from authsvc.services.issuer import first_party
from authsvc.services.mfa import PURPOSE_LOGIN, Factor

router = APIRouter(prefix="/auth/mfa", tags=["mfa"])

_ERRORS = error_responses(400, 401, 409, 413, 429, 503)
# Browser mode (the tokens in a cookie) refuses a request without the CSRF checks with 403
# csrf_rejected (api/browser.py).
_COOKIE_ERRORS = error_responses(400, 401, 403, 409, 413, 429, 503)


@router.post("/totp/enroll", response_model=TotpEnrollment, responses=_ERRORS)
async def enroll(state: State, db: WriteDB, ctx: Context, token: Bearer) -> Response:
    """A new TOTP secret for the caller, as the secret, an otpauth:// URI and its QR code (SVG);
    it is on once POST /auth/mfa/totp/confirm gets a code from it."""
    made = await state.mfa.enroll(db, token, ctx)
    body = TotpEnrollment(secret=made.secret, otpauth_uri=made.otpauth_uri, qr_svg=made.qr_svg)
    return Response(body.model_dump_json(), media_type="application/json", headers=NO_STORE)


@router.post("/totp/confirm", response_model=RecoveryCodes, responses=_ERRORS)
async def confirm(
    body: TotpCode, state: State, db: WriteDB, ctx: Context, token: Bearer
) -> Response:
    """Turns TOTP on with a first code; answers the one-time recovery codes, shown only now."""
    codes = await state.mfa.confirm(db, token, body.code, ctx)
    answer = RecoveryCodes(recovery_codes=codes)
    return Response(answer.model_dump_json(), media_type="application/json", headers=NO_STORE)


@router.post("/totp/disable", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def disable(
    body: SecondFactor, state: State, db: WriteDB, ctx: Context, token: Bearer
) -> Response:
    """Turns TOTP off: needs a fresh code (or a recovery code), not only the access token."""
    await state.mfa.disable(db, token, body.code, body.recovery_code, ctx)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=NO_STORE)


@router.post("/passkey/options", responses=_ERRORS)
async def passkey_options(body: MfaToken, state: State, db: WriteDB, ctx: Context) -> Response:
    """PublicKeyCredentialRequestOptions for navigator.credentials.get() that answer the second
    step with a passkey: the mfa_token's user's passkeys allowed, user verification required.
    The mfa_token is not spent; the assertion goes to POST /auth/mfa/verify as `credential`."""
    options = await state.mfa.passkey_options(db, body.mfa_token, PURPOSE_LOGIN, ctx)
    # A challenge is single-use: never cached.
    return JSONResponse(options, headers=NO_STORE)


@router.post("/verify", response_model=TokenResponse, responses=_COOKIE_ERRORS)
async def verify(
    cookie_mode: CookieMode,
    body: MfaVerifyRequest,
    state: State,
    db: WriteDB,
    ctx: TokenContext,
) -> Any:
    """The second step of POST /auth/login for an account with TOTP: the mfa_token it answered
    with, and exactly one of a code, a recovery code or a passkey assertion (`credential`);
    answers the token pair like /auth/login."""
    factor = Factor(code=body.code, recovery_code=body.recovery_code, credential=body.credential)
    pair = await state.login.finish(db, body.mfa_token, factor, ctx, first_party(ctx))
    if cookie_mode:
        return browser.cookie_response(pair)
    return token_response(pair)
