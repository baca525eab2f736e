"""Reading an `id_token_hint` (OpenID Connect RP-Initiated Logout 1.0 section 2): an ID token we
issued earlier, presented back to name the user, the client and the session to end.

Verified like any token of ours (RFC 8725 section 3): strict compact parsing, RS256 only, a key
from our ring, our issuer, an ID token rather than an access token (RFC 8725 section 3.11).
Only expiry is not enforced: the specification expects hints to be expired ID tokens too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeGuard

from authsvc.jose.access_token import (
    ACCESS_TOKEN_TYPES,
    ALLOWED_HEADER,
    MAX_ID_LENGTH,
    MAX_KID_LENGTH,
)
from authsvc.jose.jws import ALGORITHM, decode_compact, verify_signature
from authsvc.security.keys import KeyRing


class InvalidHint(ValueError):
    """Not an ID token of ours; the reason is for logs, never the caller."""


@dataclass(frozen=True)
class IdTokenHint:
    sub: str
    sid: str | None
    audiences: tuple[str, ...]
    azp: str | None

    def names_client(self, client_id: str) -> bool:
        """OpenID Connect Core section 2: `aud` contains the client (`azp` says which when
        there are several)."""
        return client_id in self.audiences and (self.azp is None or self.azp == client_id)

    @property
    def client_id(self) -> str | None:
        """The client the ID token was issued to, if it says unambiguously."""
        if self.azp is not None:
            return self.azp
        return self.audiences[0] if len(self.audiences) == 1 else None


def read_id_token_hint(token: str, ring: KeyRing, now: datetime, *, issuer: str) -> IdTokenHint:
    """The hint's claims if it is an ID token we signed for `issuer`, expired or not."""
    try:
        jws = decode_compact(token)
        header = jws.header
        kid = header.get("kid")
        if set(header) - ALLOWED_HEADER or not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH:
            raise InvalidHint("header")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() in ACCESS_TOKEN_TYPES):
            # An access token is not an ID token, though both are our JWTs.
            raise InvalidHint("typ")
        if header.get("alg") != ALGORITHM:
            raise InvalidHint("alg")
        key = ring.verification_key(kid, now)
        if key is None:
            raise InvalidHint("kid")
        verify_signature(jws, key.public)
        claims = jws.claims()
    except InvalidHint:
        raise
    except Exception as exc:  # hostile input must never become a 500
        raise InvalidHint("malformed") from exc
    if claims.get("iss") != issuer:
        raise InvalidHint("iss")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not audiences or not all(_is_id(a) for a in audiences):
        raise InvalidHint("aud")
    sub, sid, azp = claims.get("sub"), claims.get("sid"), claims.get("azp")
    if not _is_id(sub) or not (sid is None or _is_id(sid)) or not (azp is None or _is_id(azp)):
        raise InvalidHint("sub, sid or azp")
    return IdTokenHint(sub=sub, sid=sid, audiences=tuple(audiences), azp=azp)


def _is_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH
