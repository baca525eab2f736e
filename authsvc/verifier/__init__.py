"""What resource servers import to verify authsvc access tokens: ``pip install authsvc[verifier]``.

Needs only cryptography and httpx (FastAPI for the dependency); never imports the server's
database code (tests/test_verifier_isolation.py holds it to that).

    # audience: AUTHSVC_AUDIENCE for tokens from /auth/login, the client's audience for
    # tokens issued to an OAuth client that has one.
    verifier = Verifier(issuer="https://auth.example.com", audience="authsvc")
    app = FastAPI(lifespan=verifier.lifespan)

    @app.get("/things")
    async def things(claims: AccessClaims = Depends(verifier.require(scopes=["api"]))): ...
"""

from authsvc.verifier.claims import AccessClaims, TokenError
from authsvc.verifier.core import AuthenticationFailed, Verifier
from authsvc.verifier.middleware import VerifierMiddleware

__all__ = ["AccessClaims", "AuthenticationFailed", "TokenError", "Verifier", "VerifierMiddleware"]
