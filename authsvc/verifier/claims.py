"""What the verifier returns and refuses with: typed claims, the pins, and TokenError.

The token is parsed and checked by `authsvc.jose`, the same code the server runs: one strict
parser (RFC 7515 section 5.2) and one profile (RFC 9068, pinned per RFC 8725 section 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authsvc.jose.access_token import ACCESS_TOKEN_TYPES, REQUIRED_CLAIMS
from authsvc.jose.dpop import bound_jkt


class TokenError(Exception):
    """The token is refused. `reason` is for logs and the inspector, never for the caller."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified claims of an access token (RFC 9068 section 2.2)."""

    sub: str
    sid: str
    jti: str
    iss: str
    aud: tuple[str, ...]
    exp: int
    iat: int
    nbf: int
    scope: str
    roles: tuple[str, ...]
    client_id: str | None
    kid: str
    raw: Mapping[str, Any] = field(compare=False, repr=False)
    # RFC 9449 section 6.1: the thumbprint of the DPoP key the token is bound to, if any.
    jkt: str | None = None

    @property
    def scopes(self) -> frozenset[str]:
        # RFC 8693 section 4.2 / RFC 9068 section 2.2.3: space-separated scope tokens.
        return frozenset(self.scope.split())


@dataclass(frozen=True, slots=True)
class Policy:
    issuer: str
    audience: str
    leeway: float = 5.0
    token_types: tuple[str, ...] = ACCESS_TOKEN_TYPES
    required_claims: tuple[str, ...] = REQUIRED_CLAIMS


def typed(claims: Mapping[str, Any], kid: str) -> AccessClaims:
    """Claims that passed `claim_problems`, as AccessClaims."""
    client_id = claims.get("client_id")
    return AccessClaims(
        sub=claims["sub"],
        sid=claims["sid"],
        jti=claims["jti"],
        iss=claims["iss"],
        aud=(claims["aud"],),
        exp=int(claims["exp"]),
        iat=int(claims.get("iat", 0)),
        nbf=int(claims.get("nbf", 0)),
        scope=claims.get("scope", ""),
        roles=tuple(claims.get("roles", ())),
        client_id=client_id if isinstance(client_id, str) else None,
        kid=kid,
        raw=claims,
        jkt=bound_jkt(claims),
    )
