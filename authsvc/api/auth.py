"""/auth: login, refresh, logout, me."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from authsvc.api.deps import Bearer, Client, Now, OptionalBearer, ReadDB, State, WriteDB
from authsvc.api.schemas import (
    ErrorResponse,
    LoginRequest,
    LogoutRequest,
    MeResponse,
    RefreshRequest,
    TokenResponse,
)
from authsvc.errors import NO_STORE

router = APIRouter(prefix="/auth", tags=["auth"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse},
    401: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    429: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}


def _no_store(response: Response) -> None:
    # RFC 6749 section 5.1: responses carrying tokens must not be cached.
    response.headers.update(NO_STORE)


@router.post("/login", response_model=TokenResponse, responses=_ERRORS)
async def login(
    body: LoginRequest, state: State, db: WriteDB, now: Now, client: Client, response: Response
) -> TokenResponse:
    pair = await state.auth.login(db, body.username, body.password, now, client)
    _no_store(response)
    return TokenResponse.of(pair)


@router.post("/refresh", response_model=TokenResponse, responses=_ERRORS)
async def refresh(
    body: RefreshRequest, state: State, db: WriteDB, now: Now, client: Client, response: Response
) -> TokenResponse:
    pair = await state.auth.refresh(db, body.refresh_token, now, client)
    _no_store(response)
    return TokenResponse.of(pair)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def logout(
    state: State,
    db: WriteDB,
    now: Now,
    bearer: OptionalBearer,
    client: Client,
    body: LogoutRequest | None = None,
) -> Response:
    body = body or LogoutRequest()
    await state.auth.logout(
        db,
        now,
        access_token=bearer,
        refresh_token=body.refresh_token,
        scope=body.scope,
        client=client,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=NO_STORE)


@router.get("/me", response_model=MeResponse, responses=_ERRORS)
async def me(state: State, db: ReadDB, now: Now, token: Bearer) -> MeResponse:
    principal = await state.auth.me(db, token, now)
    return MeResponse(
        id=principal.user.id,
        username=principal.user.username,
        roles=list(principal.user.roles or []),
        session_id=principal.claims.sid,
        scope=principal.claims.scope,
    )
