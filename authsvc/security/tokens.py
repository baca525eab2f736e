"""Access tokens (RS256 JWTs, RFC 9068 profile) and opaque refresh tokens.

Verification is pinned (RFC 8725 section 3): one algorithm, our issuer and audience, the
`at+jwt` type, a fixed set of header members and required claims, and a size cap before any
parsing. Refresh tokens are random and stored only as keyed digests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt

from authsvc.errors import InvalidToken
from authsvc.security.keys import ALGORITHM, KeyRing

MAX_TOKEN_LENGTH = 8192
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - the RFC 9068 media type
_ALLOWED_HEADER = frozenset({"alg", "typ", "kid"})
_REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid"]
_JWS_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")

REFRESH_PREFIX = "rt_"
_REFRESH_SHAPE = re.compile(r"^rt_[A-Za-z0-9_-]{43}$")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


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
        if len(token) > MAX_TOKEN_LENGTH or not _JWS_SHAPE.match(token):
            return None
        try:
            aud = jwt.decode(token, options={"verify_signature": False}).get("aud")
        except Exception:  # hostile input: simply not one of ours
            return None
        return aud if isinstance(aud, str) else None

    def _verify(self, token: str, ring: KeyRing, now: datetime, audience: str) -> AccessClaims:
        if len(token) > MAX_TOKEN_LENGTH or not _JWS_SHAPE.match(token):
            raise InvalidToken()
        header = jwt.get_unverified_header(token)
        if set(header) - _ALLOWED_HEADER or header.get("alg") != ALGORITHM:
            raise InvalidToken()
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in (
            ACCESS_TOKEN_TYPE,
            "application/" + ACCESS_TOKEN_TYPE,
        ):
            raise InvalidToken()
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken()
        key = ring.verification_key(kid, now)
        if key is None:
            raise InvalidToken()
        payload: dict[str, Any] = jwt.decode(
            token,
            key.public,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=self.issuer,
            leeway=self.leeway,
            options={
                "require": _REQUIRED_CLAIMS,
                "verify_signature": True,
                "strict_aud": True,
                # Times are checked below against our clock, which tests move; PyJWT would
                # use the wall clock.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
        ts = now.timestamp()
        exp, nbf, iat = payload["exp"], payload["nbf"], payload["iat"]
        for value in (exp, nbf, iat):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidToken()
        if exp <= ts - self.leeway or nbf > ts + self.leeway or iat > ts + self.leeway:
            raise InvalidToken()
        roles = payload.get("roles", [])
        scope = payload.get("scope", "")
        strings = (payload["sub"], payload["sid"], payload["jti"], scope)
        if not all(isinstance(v, str) for v in strings):
            raise InvalidToken()
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise InvalidToken()
        return AccessClaims(
            sub=payload["sub"],
            sid=payload["sid"],
            jti=payload["jti"],
            roles=roles,
            scope=scope,
            client_id=str(payload.get("client_id", "")),
            issued_at=int(iat),
            expires_at=int(exp),
        )


class RefreshTokens:
    """Opaque refresh tokens: `rt_` + 256 random bits, kept only as HMAC-SHA256 digests.

    A token's successor is derived from it (HMAC under a second server key), so an honest retry
    inside the grace window can be handed the same successor again without the server ever
    storing a token in plaintext.
    """

    def __init__(self, digest_key: bytes, successor_key: bytes) -> None:
        self._digest_key = digest_key
        self._successor_key = successor_key

    @staticmethod
    def new() -> str:
        return REFRESH_PREFIX + _b64url(secrets.token_bytes(32))

    @staticmethod
    def well_formed(token: str) -> bool:
        return bool(_REFRESH_SHAPE.match(token))

    def successor(self, token: str) -> str:
        mac = hmac.new(self._successor_key, token.encode(), hashlib.sha256).digest()
        return REFRESH_PREFIX + _b64url(mac)

    def digest(self, token: str) -> bytes:
        return hmac.new(self._digest_key, token.encode(), hashlib.sha256).digest()

    @staticmethod
    def same_digest(a: bytes, b: bytes) -> bool:
        return hmac.compare_digest(a, b)
