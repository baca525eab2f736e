"""The access-token credential of an HTTP request: `Bearer` (RFC 6750 section 2.1) or `DPoP`
(RFC 9449 section 7.1)."""

from __future__ import annotations

from authsvc.jose.jws import MalformedToken

BEARER = "Bearer"
DPOP = "DPoP"


def parse_authorization(header: str | None) -> tuple[str, str] | None:
    """(scheme, token) from an Authorization header: `Bearer` or `DPoP` (either spelled in any
    case, returned canonical), one token. None when there is no header at all (RFC 6750
    section 3: then the challenge carries no error code); MalformedToken for anything else."""
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip(" ")
    if not token or " " in token:
        raise MalformedToken("malformed Authorization header")
    if scheme.lower() == "bearer":
        return BEARER, token
    if scheme.lower() == "dpop":
        return DPOP, token
    raise MalformedToken("malformed Authorization header")


def parse_bearer(header: str | None) -> str | None:
    """`Bearer <token>` from an Authorization header, the scheme case-insensitive; nothing else.

    None when there is no header at all; MalformedToken for any other scheme or shape.
    """
    parsed = parse_authorization(header)
    if parsed is None:
        return None
    if parsed[0] != BEARER:
        raise MalformedToken("malformed Authorization header")
    return parsed[1]
