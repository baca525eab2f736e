"""The bearer credential of an HTTP request (RFC 6750 section 2.1)."""

from __future__ import annotations

from authsvc.jose.jws import MalformedToken


def parse_bearer(header: str | None) -> str | None:
    """`Bearer <token>` from an Authorization header, the scheme case-insensitive; nothing else.

    None when there is no header at all (RFC 6750 section 3: then the challenge carries no
    error code); MalformedToken for any other scheme or shape.
    """
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip(" ")
    if scheme.lower() != "bearer" or not token or " " in token:
        raise MalformedToken("malformed Authorization header")
    return token
