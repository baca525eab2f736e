"""Pinned verification of authsvc access tokens (RS256 JWS, RFC 9068 profile), with no server code.

Written on `cryptography` directly rather than through a JOSE library: the profile is fixed (one
algorithm, three header members), so the code is short, and it skips the generic machinery that
would otherwise dominate the cost of a first-seen token. Steps follow RFC 7515 section 5.2; the
pins follow RFC 8725 section 3 (algorithm, type, issuer, audience).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ALGORITHM = "RS256"
# RFC 9068 section 2.1: `at+jwt`; the full media type is accepted too (RFC 7515 section 4.1.9).
TOKEN_TYPES = ("at+jwt", "application/at+jwt")
MAX_TOKEN_LENGTH = 8192
ALLOWED_HEADER = frozenset({"alg", "typ", "kid"})
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid")
MIN_RSA_BITS = 2048
_JWS_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_PADDING = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


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

    @property
    def scopes(self) -> frozenset[str]:
        # RFC 8693 section 4.2 / RFC 9068 section 2.2.3: space-separated scope tokens.
        return frozenset(self.scope.split())


@dataclass(frozen=True, slots=True)
class Policy:
    issuer: str
    audience: str
    leeway: float = 5.0
    token_types: tuple[str, ...] = TOKEN_TYPES
    required_claims: tuple[str, ...] = REQUIRED_CLAIMS


@dataclass(frozen=True, slots=True)
class Parsed:
    header: dict[str, Any]
    signing_input: bytes
    payload_segment: str
    signature: bytes


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 section 5.2 step 4: a JSON object with duplicate members must be rejected.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member")
    return obj


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise TokenError("not JSON") from exc
    if not isinstance(value, dict):
        raise TokenError("not a JSON object")
    return value


def parse(token: str) -> Parsed:
    """Split and decode the header; the payload is decoded only after the signature verifies."""
    if len(token) > MAX_TOKEN_LENGTH or not _JWS_SHAPE.match(token):
        raise TokenError("not a compact JWS of bounded size")
    header_segment, payload_segment, signature_segment = token.split(".")
    try:
        header = json_object(b64url_decode(header_segment))
        signature = b64url_decode(signature_segment)
    except (binascii.Error, ValueError) as exc:
        raise TokenError("bad base64url") from exc
    # Only the canonical encoding: otherwise a changed last character (ignored low bits) would
    # give a second string for one signature, and a second entry in the verified-token cache.
    if base64.urlsafe_b64encode(signature).rstrip(b"=") != signature_segment.encode("ascii"):
        raise TokenError("non-canonical base64url signature")
    return Parsed(
        header=header,
        signing_input=f"{header_segment}.{payload_segment}".encode("ascii"),
        payload_segment=payload_segment,
        signature=signature,
    )


def header_problems(header: Mapping[str, Any], policy: Policy) -> dict[str, str]:
    """Every header check that fails, by name (alg, typ, kid, header)."""
    problems: dict[str, str] = {}
    extra = set(header) - ALLOWED_HEADER
    if extra:
        problems["header"] = f"unexpected header members {sorted(extra)}"
    if header.get("alg") != ALGORITHM:
        problems["alg"] = f"alg must be {ALGORITHM}, got {header.get('alg')!r}"
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in policy.token_types:
        problems["typ"] = f"typ must be {policy.token_types[0]}, got {typ!r}"
    if not isinstance(header.get("kid"), str) or not header.get("kid"):
        problems["kid"] = "no kid in the header"
    return problems


def signature_ok(parsed: Parsed, key: rsa.RSAPublicKey) -> bool:
    try:
        key.verify(parsed.signature, parsed.signing_input, _PADDING, _SHA256)
    except InvalidSignature:
        return False
    return True


def payload(parsed: Parsed) -> dict[str, Any]:
    try:
        return json_object(b64url_decode(parsed.payload_segment))
    except (binascii.Error, ValueError) as exc:
        raise TokenError("bad base64url") from exc


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def claim_problems(claims: Mapping[str, Any], policy: Policy, now: float) -> dict[str, str]:
    """Every claim check that fails, by claim name (iss, aud, exp, nbf, iat, required, types)."""
    problems: dict[str, str] = {}
    missing = [c for c in policy.required_claims if c not in claims]
    if missing:
        problems["required"] = f"missing claims {missing}"
    if claims.get("iss") != policy.issuer:
        problems["iss"] = f"iss must be {policy.issuer!r}, got {claims.get('iss')!r}"
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if policy.audience not in auds:
        problems["aud"] = f"aud must contain {policy.audience!r}, got {aud!r}"
    leeway = policy.leeway
    exp: Any = claims.get("exp")
    nbf: Any = claims.get("nbf")
    iat: Any = claims.get("iat")
    # RFC 7519 sections 4.1.4, 4.1.5: exp and nbf with a small leeway for clock skew.
    if not _number(exp):
        problems["exp"] = "exp is missing or not a number"
    elif now >= exp + leeway:
        problems["exp"] = f"expired {now - exp:.0f} s ago"
    if nbf is not None and (not _number(nbf) or nbf > now + leeway):
        problems["nbf"] = "nbf is not a number" if not _number(nbf) else "not valid yet"
    if iat is not None and (not _number(iat) or iat > now + leeway):
        problems["iat"] = "iat is not a number" if not _number(iat) else "issued in the future"
    strings = ("sub", "sid", "jti")
    if not all(isinstance(claims.get(c, ""), str) for c in (*strings, "scope")):
        problems["types"] = "sub, sid, jti and scope must be strings"
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        problems["types"] = "roles must be a list of strings"
    return problems


def typed(claims: Mapping[str, Any], kid: str) -> AccessClaims:
    aud = claims["aud"]
    client_id = claims.get("client_id")
    return AccessClaims(
        sub=claims["sub"],
        sid=claims["sid"],
        jti=claims["jti"],
        iss=claims["iss"],
        aud=(aud,) if isinstance(aud, str) else tuple(aud),
        exp=int(claims["exp"]),
        iat=int(claims.get("iat", 0)),
        nbf=int(claims.get("nbf", 0)),
        scope=claims.get("scope", ""),
        roles=tuple(claims.get("roles", ())),
        client_id=client_id if isinstance(client_id, str) else None,
        kid=kid,
        raw=claims,
    )


def rsa_key_from_jwk(jwk: Mapping[str, Any]) -> rsa.RSAPublicKey | None:
    """An RS256 signing key from a JWK (RFC 7518 section 6.3.1), or None if unusable for us."""
    if jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig":
        return None
    if jwk.get("alg", ALGORITHM) != ALGORITHM or not isinstance(jwk.get("kid"), str):
        return None
    if any(k in jwk for k in ("d", "p", "q")):
        return None  # a private key in a JWKS is a publisher bug; do not use it
    try:
        n = int.from_bytes(b64url_decode(jwk["n"]), "big")
        e = int.from_bytes(b64url_decode(jwk["e"]), "big")
        key = rsa.RSAPublicNumbers(e, n).public_key()
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    return key if key.key_size >= MIN_RSA_BITS else None
