"""GET /auth/revocations: the revocation feed resource servers poll (see services.revocations).

Public on purpose: it holds only random ids (128-bit jtis, random session UUIDs, the ids of
deleted clients, which are not secrets either: RFC 6749 section 2.2) and expiry times, which
grant nothing (docs/resource-servers.md, "The revocation feed").
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from authsvc.api.deps import Now, ReadDB, State
from authsvc.api.errors import error_responses
from authsvc.services import revocations
from authsvc.services.revocations import CURSOR_MAX_LENGTH, CURSOR_PATTERN

router = APIRouter(prefix="/auth", tags=["auth"])


class RevokedJti(BaseModel):
    jti: str
    exp: int


class RevokedSid(BaseModel):
    sid: str
    exp: int


class RevocationsResponse(BaseModel):
    revoked_jtis: list[RevokedJti]
    revoked_sids: list[RevokedSid]
    cursor: str
    poll_after: int
    # True when the cursor could not be followed (another epoch, pruned past, or a restored
    # database): these pages restart from the first live entry; drop nothing, keep polling.
    resync: bool = False


# All pollers that are up to date ask with the same cursor, so a shared cache in front may
# collapse them for a second; longer would delay logouts.
FEED_CACHE_CONTROL = "public, max-age=1"


@router.get(
    "/revocations",
    response_model=RevocationsResponse,
    responses=error_responses(400, 503),
)
async def feed(
    state: State,
    db: ReadDB,
    now: Now,
    since: Annotated[
        str | None, Query(max_length=CURSOR_MAX_LENGTH, pattern=CURSOR_PATTERN)
    ] = None,
) -> Any:
    page = await revocations.changes(db, state.database.fast_lane, state.settings, since, now)
    body = RevocationsResponse(
        revoked_jtis=[RevokedJti(jti=e.value, exp=e.exp) for e in page.jtis],
        revoked_sids=[RevokedSid(sid=e.value, exp=e.exp) for e in page.sids],
        cursor=page.cursor,
        poll_after=page.poll_after,
        resync=page.resync,
    )
    return JSONResponse(body.model_dump(), headers={"Cache-Control": FEED_CACHE_CONTROL})
