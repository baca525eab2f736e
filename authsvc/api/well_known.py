"""/.well-known: the public keys resource servers verify with."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from authsvc.api.deps import get_state
from authsvc.api.schemas import JWKS

router = APIRouter(tags=["discovery"])

JWKS_PATH = "/.well-known/jwks.json"


class JWKSResponse(JSONResponse):
    media_type = "application/jwk-set+json"  # RFC 7517 section 8.5.1


@router.get(JWKS_PATH, response_model=JWKS, response_class=JWKSResponse)
async def jwks(request: Request) -> Response:
    # No dependencies on purpose: this is the hottest public endpoint, and the key service
    # opens a read transaction only when its ring is due for a reload.
    state = get_state(request)
    body = await state.keys.jwks_document(state.database, state.clock.now())
    return jwks_response(body, state.settings.jwks_max_age)


def jwks_response(body: bytes, max_age: int) -> Response:
    """The JWKS answer; also what api/jwks_edge.py pre-renders its headers from."""
    return Response(
        body,
        headers={"Cache-Control": f"public, max-age={max_age}"},
        media_type=JWKSResponse.media_type,
    )


# Caches and CDNs revalidate with HEAD (RFC 9110 section 9.3.2); same answer, the server drops
# the body. Kept out of the OpenAPI document, which describes GET.
router.add_api_route(JWKS_PATH, jwks, methods=["HEAD"], include_in_schema=False)
