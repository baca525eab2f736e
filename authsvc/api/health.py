"""Liveness and readiness for orchestrators.

/readyz is 503 when this process cannot serve (database, schema, signing key). A shared
dependency whose outage has a failure policy (the rate limiter's Redis) makes it "degraded" but
still 200: every instance shares that outage, so taking this one out of the load balancer would
help no one, and the policy already decides what requests get.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from authsvc.api.deps import Now, State
from authsvc.api.schemas import Health
from authsvc.security.secrets import UnreadableSecret
from authsvc.store.db import head_revision

router = APIRouter(tags=["health"])

_REQUIRED = ("database", "schema", "signing_key")


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(state: State, now: Now) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await state.database.ping()
        checks["database"] = "ok"
        revision = await state.database.schema_revision()
        checks["schema"] = "ok" if revision == head_revision() else f"at {revision}"
        async with state.database.read() as db:
            ring = await state.keys.ring_at(db, now)
        checks["signing_key"] = "ok" if ring.signing_key(now) is not None else "missing"
    except UnreadableSecret:  # a signing key written under a KEK this process lacks
        checks["signing_key"] = "unreadable with this process's key-encryption keys"
    except Exception as exc:  # readiness reports failure, it never raises it
        checks.setdefault("database", f"unavailable: {type(exc).__name__}")
    ready = all(checks.get(name) == "ok" for name in _REQUIRED)
    limiter = await state.limiter.health()
    if limiter is not None:
        checks["rate_limiter"] = limiter
    status = "unavailable" if not ready else "ok" if limiter in (None, "ok") else "degraded"
    body = Health(status=status, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
