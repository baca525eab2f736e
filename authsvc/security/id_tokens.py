"""OpenID Connect ID tokens (OIDC Core sections 2 and 3.1.3.6): RS256 JWTs signed with the same
key ring as access tokens, for the client (`aud` = `azp` = its client_id)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import jwt

from authsvc.jose.jws import ALGORITHM, b64url_encode
from authsvc.security.keys import KeyRing


def at_hash(access_token: str) -> str:
    """OIDC Core section 3.1.3.6: the left half of the SHA-256 of the access token's ASCII,
    base64url (SHA-256 because the token is RS256)."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return b64url_encode(digest[: len(digest) // 2])


@dataclass(frozen=True, slots=True)
class IdTokenClaims:
    """Who authenticated, when, for which client and session; `nonce` only on the code
    exchange (OIDC Core section 12.2: a refreshed ID token carries none)."""

    subject: str
    client_id: str
    session_id: str
    auth_time: datetime
    nonce: str | None
    # OIDC Core section 2 / RFC 8176: how the user signed in ("pwd", "otp", "mfa").
    amr: Sequence[str]


class IdTokens:
    def __init__(self, *, issuer: str, ttl: int) -> None:
        self.issuer = issuer
        self.ttl = ttl

    def issue(self, ring: KeyRing, now: datetime, claims: IdTokenClaims, access_token: str) -> str:
        key = ring.signing_key(now)
        if key is None:
            raise RuntimeError("no active signing key")
        iat = int(now.timestamp())
        payload: dict[str, object] = {
            "iss": self.issuer,
            "sub": claims.subject,
            "aud": claims.client_id,
            "azp": claims.client_id,
            "exp": iat + self.ttl,
            "iat": iat,
            "auth_time": int(claims.auth_time.timestamp()),
            "at_hash": at_hash(access_token),
            "amr": list(claims.amr),
            "sid": claims.session_id,
        }
        if claims.nonce is not None:
            payload["nonce"] = claims.nonce
        return jwt.encode(
            payload, key.private, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "JWT"}
        )
