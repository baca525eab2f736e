"""/auth: self-service sign-up, email verification and password recovery by email."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse

from authsvc.api.deps import Context, State, WriteDB
from authsvc.api.errors import error_responses
from authsvc.api.schemas import (
    AcceptedResponse,
    EmailVerifyRequest,
    ForgotByEmail,
    ForgotByUsername,
    PasswordForgotRequest,
    PasswordResetRequest,
    SignupRequest,
)
from authsvc.errors import NO_STORE

router = APIRouter(prefix="/auth", tags=["accounts"])

_ERRORS = error_responses(400, 401, 404, 413, 429, 503)

SIGNUP_ACCEPTED = (
    "If the name and address can be used, a mail with a confirmation link is on its way; "
    "check the mailbox of the address you gave."
)
RESET_ACCEPTED = (
    "If an active account with an email address matches, a mail with a reset link is on its way "
    "to that address."
)


def _accepted(message: str) -> JSONResponse:
    # 202: the mail leaves later, from the outbox. The same bytes whatever exists.
    return JSONResponse(
        AcceptedResponse(message=message).model_dump(),
        status_code=status.HTTP_202_ACCEPTED,
        headers=NO_STORE,
    )


@router.post(
    "/signup",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedResponse,
    responses=_ERRORS,
)
async def signup(body: SignupRequest, state: State, db: WriteDB, ctx: Context) -> Any:
    """Sign up (when AUTHSVC_SIGNUP_ENABLED; else 404 `signup_disabled`). The account stays
    off until the emailed link is followed. The answer is the same whether or not the name or
    address is taken."""
    await state.signup.signup(db, body.username, body.email, body.password, ctx)
    return _accepted(SIGNUP_ACCEPTED)


@router.post("/email/verify", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def verify_email(
    body: EmailVerifyRequest, state: State, db: WriteDB, ctx: Context
) -> Response:
    """Redeem a verification link's `token`, once; 401 `invalid_link` otherwise."""
    await state.signup.verify_email(db, body.token, ctx)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=NO_STORE)


@router.post(
    "/password/forgot",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedResponse,
    responses=_ERRORS,
)
async def forgot_password(
    body: PasswordForgotRequest, state: State, db: WriteDB, ctx: Context
) -> Any:
    """Ask for a reset link by `email` or `username`; the same answer whether or not such an
    account exists."""
    email = body.email if isinstance(body, ForgotByEmail) else None
    username = body.username if isinstance(body, ForgotByUsername) else None
    await state.recovery.forgot(db, email, username, ctx)
    return _accepted(RESET_ACCEPTED)


@router.post("/password/reset", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def reset_password(
    body: PasswordResetRequest, state: State, db: WriteDB, ctx: Context
) -> Response:
    """Set a new password with a reset link's `token`, once; every session of the user is
    revoked. 401 `invalid_link` for a used, expired or unknown token."""
    await state.recovery.reset(db, body.token, body.new_password, ctx)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=NO_STORE)
