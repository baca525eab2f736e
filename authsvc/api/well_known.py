"""/.well-known: the public keys resource servers verify with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from authsvc.api.deps import Now, ReadDB, State
from authsvc.api.schemas import JWKS

router = APIRouter(tags=["discovery"])


class JWKSResponse(JSONResponse):
    media_type = "application/jwk-set+json"  # RFC 7517 section 8.5.1


@router.get("/.well-known/jwks.json", response_model=JWKS, response_class=JWKSResponse)
async def jwks(state: State, db: ReadDB, now: Now) -> Any:
    ring = await state.keys.ring_at(db, now)
    max_age = state.settings.jwks_max_age
    return JWKSResponse(ring.jwks(now), headers={"Cache-Control": f"public, max-age={max_age}"})
