"""The refresh floor: a bare FastAPI endpoint doing only the work no refresh can skip, served by
the runner exactly like authsvc (uvicorn, same workers, uvloop + httptools, no access log) on the
same PostgreSQL database and driven by the same wrk script.

POST /refresh {"refresh_token": ...}: validate the JSON body (a pydantic model), derive the
token's digest and its successor (HMAC-SHA256, authsvc's keys), run authsvc's one rotation
statement (store/rotation.py, compiled for asyncpg) on an asyncpg pool, sign an RS256 access
token with
PyJWT (2048-bit key, the same claims), answer JSON. No middleware, no security headers, request
ids, metrics, rate limiting, key ring, grace window or reuse detection: what is left of authsvc's
refresh once everything that is not the floor is taken away. Its rate says what this machine
allows a FastAPI refresh endpoint on PostgreSQL at all.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.engine import make_url

from authsvc.config import load_settings
from authsvc.security.refresh_tokens import RefreshTokens
from authsvc.security.secrets import load_secrets
from authsvc.services.secrets import SecretService
from authsvc.store.db import Database
from authsvc.store.rotation import asyncpg_rotation, rotation_values

settings = load_settings()
_secrets = load_secrets(settings)
tokens = RefreshTokens(_secrets)  # its HMAC keys are read from the database at start-up
ROTATION = asyncpg_rotation()
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
DSN = make_url(settings.resolved_database_url).set(drivername="postgresql")
pool: Any = None


async def _no_reset(_connection: Any) -> None:
    return None


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global pool
    database = Database(settings.resolved_database_url, pool_size=1)
    try:
        await SecretService(_secrets).load(database, datetime.now(UTC))
    finally:
        await database.dispose()
    pool = await asyncpg.create_pool(
        DSN.render_as_string(hide_password=False),
        min_size=0,
        max_size=settings.db_pool_size,
        reset=_no_reset,
    )
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


class Body(BaseModel):
    refresh_token: str


@app.post("/refresh")
async def refresh(body: Body) -> JSONResponse:
    now = datetime.now(UTC)
    token = body.refresh_token
    successor = tokens.successor(token)
    async with pool.acquire() as connection:
        values = rotation_values(
            tokens.digest(token),
            tokens.digest(successor),
            now,
            None,
            now + timedelta(seconds=settings.refresh_token_ttl),
            None,
        )
        row = await connection.fetchrow(ROTATION.sql, *ROTATION.args(values))
    if row is None:
        return JSONResponse({"error": "invalid_refresh_token"}, status_code=401)
    iat = int(now.timestamp())
    claims = {
        "iss": settings.issuer,
        "sub": str(row[1]),
        "aud": settings.audience,
        "exp": iat + settings.access_token_ttl,
        "iat": iat,
        "nbf": iat,
        "jti": secrets.token_urlsafe(16),
        "sid": str(row[0]),
        "client_id": "authsvc",
        "scope": row[3] or settings.default_scope,
        "roles": json.loads(row[2]) if row[2] else [],
    }
    access = jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": "floor", "typ": "at+jwt"})
    return JSONResponse(
        {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": settings.access_token_ttl,
            "refresh_token": successor,
            "refresh_expires_in": int((row[5] - now).total_seconds()),
        },
        headers={"Cache-Control": "no-store"},
    )


@app.get("/health")
async def health() -> dict[str, str]:
    return {"pid": str(os.getpid())}
