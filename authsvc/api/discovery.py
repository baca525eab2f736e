"""/.well-known OAuth 2 authorization server metadata (RFC 8414) and OpenID Provider metadata
(OpenID Connect Discovery 1.0): the same document at both paths."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from authsvc.api.deps import State

router = APIRouter(tags=["discovery"])


def _doc(state: State) -> JSONResponse:
    return JSONResponse(
        state.oauth.metadata(),
        headers={"Cache-Control": f"public, max-age={state.settings.jwks_max_age}"},
    )


@router.get("/.well-known/oauth-authorization-server")
async def oauth_metadata(state: State) -> JSONResponse:
    return _doc(state)


@router.get("/.well-known/openid-configuration")
async def openid_configuration(state: State) -> JSONResponse:
    return _doc(state)
