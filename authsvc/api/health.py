"""Liveness and readiness for orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from authsvc.api.deps import Now, State
from authsvc.api.schemas import Health
from authsvc.store.db import head_revision

router = APIRouter(tags=["health"])


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
    except Exception as exc:  # readiness reports failure, it never raises it
        checks.setdefault("database", f"unavailable: {type(exc).__name__}")
    ready = all(v == "ok" for v in checks.values()) and len(checks) == 3
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
