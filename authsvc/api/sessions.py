"""/auth/sessions and /auth/password: the caller manages their own sessions and password."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from authsvc.api.deps import Bearer, Context, ReadDB, State, WriteDB
from authsvc.api.errors import error_responses
from authsvc.api.schemas import (
    PasswordChangeRequest,
    SessionInfo,
    SessionsResponse,
)
from authsvc.errors import NO_STORE

router = APIRouter(prefix="/auth", tags=["sessions"])

_ERRORS = error_responses(400, 401, 404, 503)
# The body limit (api/limits.py) answers 413 before the body is read; a wrong current password
# counts against the name's sign-in attempts like a failed login (429).
_PASSWORD_ERRORS = error_responses(400, 401, 404, 413, 429, 503)


@router.get("/sessions", response_model=SessionsResponse, responses=_ERRORS)
async def list_sessions(state: State, db: ReadDB, ctx: Context, token: Bearer) -> SessionsResponse:
    views = await state.sessions.list(db, token, ctx)
    return SessionsResponse(sessions=[SessionInfo(**vars(v)) for v in views])


@router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def revoke_session(
    session_id: str, state: State, db: WriteDB, ctx: Context, token: Bearer
) -> Response:
    await state.sessions.revoke(db, token, session_id, ctx)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=NO_STORE)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT, responses=_PASSWORD_ERRORS)
async def change_password(
    body: PasswordChangeRequest, state: State, db: WriteDB, ctx: Context, token: Bearer
) -> Response:
    await state.sessions.change_password(db, token, body.current_password, body.new_password, ctx)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=NO_STORE)
