"""The FastAPI dependency (imported only when used: FastAPI is optional for the verifier)."""

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi import HTTPException, Request

from authsvc.verifier.claims import AccessClaims
from authsvc.verifier.core import AuthenticationFailed

if TYPE_CHECKING:
    from authsvc.verifier.core import Verifier


def dependency(
    verifier: "Verifier", scopes: tuple[str, ...], roles: tuple[str, ...]
) -> Callable[[Request], Awaitable[AccessClaims]]:
    async def require_token(request: Request) -> AccessClaims:
        proofs = request.headers.getlist("dpop")
        try:
            if len(proofs) > 1:  # RFC 9449 section 4.3 step 1
                raise AuthenticationFailed(
                    400, "invalid_request", "Send one DPoP proof.", verifier.realm, dpop=True
                )
            claims = await verifier.authenticate(
                request.headers.get("authorization"),
                scopes,
                roles,
                dpop=proofs[0] if proofs else None,
                method=request.method,
                path=request.url.path,
            )
        except AuthenticationFailed as exc:
            raise HTTPException(exc.status, detail=exc.message, headers=exc.headers) from None
        request.state.access_claims = claims
        return claims

    return require_token
