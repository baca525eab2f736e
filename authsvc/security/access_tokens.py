"""Access tokens: RS256 JWTs in the RFC 9068 profile, issued with PyJWT and verified through
`authsvc.jose`, the same strict parser and profile checks that resource servers run.

Verification is pinned (RFC 8725 section 3): one algorithm, our issuer and audience, the
`at+jwt` type, a fixed set of header members and required claims, and a size cap before any
parsing.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import jwt

from authsvc.errors import InvalidToken
from authsvc.jose.access_token import ACCESS_TOKEN_TYPE, claim_problems, header_problems
from authsvc.jose.dpop import bound_jkt
from authsvc.jose.jws import ALGORITHM, decode_compact, verify_signature
from authsvc.security.keys import KeyRing


@dataclass(frozen=True)
class AccessClaims:
    sub: str
    sid: str
    jti: str
    roles: list[str]
    scope: str
    client_id: str
    issued_at: int
    expires_at: int
    # RFC 9449 section 6.1: the thumbprint of the key the token is bound to (`cnf.jkt`).
    jkt: str | None = None


class AccessTokens:
    def __init__(self, *, issuer: str, audience: str, ttl: int, leeway: int) -> None:
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self.leeway = leeway

    def issue(
        self,
        ring: KeyRing,
        now: datetime,
        *,
        subject: str,
        session_id: str,
        roles: list[str],
        scope: str,
        client_id: str,
        audience: str | None = None,
        jkt: str | None = None,
        amr: Sequence[str] | None = None,
    ) -> tuple[str, AccessClaims]:
        key = ring.signing_key(now)
        if key is None:
            raise RuntimeError("no active signing key")
        iat = int(now.timestamp())
        claims = AccessClaims(
            sub=subject,
            sid=session_id,
            jti=secrets.token_urlsafe(16),
            roles=list(roles),
            scope=scope,
            client_id=client_id,
            issued_at=iat,
            expires_at=iat + self.ttl,
            jkt=jkt,
        )
        payload = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience or self.audience,
            "exp": claims.expires_at,
            "iat": iat,
            "nbf": iat,
            "jti": claims.jti,
            "sid": session_id,
            "client_id": client_id,
            "scope": scope,
            "roles": claims.roles,
        }
        if jkt is not None:
            payload["cnf"] = {"jkt": jkt}
        if amr:
            # RFC 8176: how the user signed in ("pwd"; "pwd", "otp", "mfa" with a code).
            payload["amr"] = list(amr)
        token = jwt.encode(
            payload,
            key.private,
            algorithm=ALGORITHM,
            headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
        )
        return token, claims

    def verify(
        self, token: str, ring: KeyRing, now: datetime, *, audience: str | None = None
    ) -> AccessClaims:
        """Verify signature and claims; any failure is the same InvalidToken.

        `audience` pins another audience than ours (tokens issued to a client with its own
        default audience, checked by introspection and revocation).
        """
        try:
            return self._verify(token, ring, now, audience or self.audience)
        except InvalidToken:
            raise
        except Exception as exc:  # hostile input must never become a 500
            raise InvalidToken() from exc

    @staticmethod
    def peek_audience(token: str) -> str | None:
        """The unverified `aud` of a JWS, to choose which audience to pin; None if unreadable."""
        try:
            aud = decode_compact(token).claims().get("aud")
        except Exception:  # hostile input: simply not one of ours
            return None
        return aud if isinstance(aud, str) else None

    def _verify(self, token: str, ring: KeyRing, now: datetime, audience: str) -> AccessClaims:
        # The header is read (strictly) before the signature only to pick the key; nothing in
        # it is trusted until the signature over it verifies.
        jws = decode_compact(token)
        if header_problems(jws.header):
            raise InvalidToken()
        key = ring.verification_key(jws.header["kid"], now)
        if key is None:
            raise InvalidToken()
        verify_signature(jws, key.public)
        payload = jws.claims()
        if claim_problems(
            payload, issuer=self.issuer, audience=audience, leeway=self.leeway, now=now.timestamp()
        ):
            raise InvalidToken()
        return AccessClaims(
            sub=payload["sub"],
            sid=payload["sid"],
            jti=payload["jti"],
            roles=payload.get("roles", []),
            scope=payload.get("scope", ""),
            client_id=payload.get("client_id", ""),
            issued_at=int(payload["iat"]),
            expires_at=int(payload["exp"]),
            jkt=bound_jkt(payload),
        )
