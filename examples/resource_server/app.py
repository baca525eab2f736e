"""A small resource server protected by authsvc.verifier.

    AUTHSVC_URL=http://127.0.0.1:8000 .venv/bin/uvicorn --app-dir examples/resource_server app:app --port 9000

Settings (environment):
    AUTHSVC_URL                  where authsvc answers (JWKS and revocation feed); required
    RESOURCE_ISSUER              expected `iss`; default AUTHSVC_URL
    RESOURCE_AUDIENCE            expected `aud`; default "authsvc", the AUTHSVC_AUDIENCE default
                                 that tokens from /auth/login carry
    RESOURCE_POLL_INTERVAL       seconds between revocation-feed polls; default 3
    RESOURCE_KID_REFETCH_INTERVAL  least seconds between JWKS refetches for unknown kids; default 30
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import Depends, FastAPI

from authsvc.verifier import AccessClaims, Verifier

AUTHSVC_URL = os.environ["AUTHSVC_URL"].rstrip("/")

verifier = Verifier(
    issuer=os.environ.get("RESOURCE_ISSUER", AUTHSVC_URL),
    audience=os.environ.get("RESOURCE_AUDIENCE", "authsvc"),
    authsvc_url=AUTHSVC_URL,
    poll_interval=float(os.environ.get("RESOURCE_POLL_INTERVAL", "3")),
    kid_refetch_interval=float(os.environ.get("RESOURCE_KID_REFETCH_INTERVAL", "30")),
)

# The lifespan starts the JWKS fetch and the background revocation poller, and stops them.
app = FastAPI(title="example resource server", lifespan=verifier.lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/hello")
async def hello(claims: AccessClaims = Depends(verifier.require(scopes=["api"]))) -> Any:
    return {"hello": claims.sub, "session": claims.sid, "scope": claims.scope}


@app.get("/admin")
async def admin(claims: AccessClaims = Depends(verifier.require(roles=["admin"]))) -> Any:
    return {"admin": claims.sub, "roles": list(claims.roles)}
