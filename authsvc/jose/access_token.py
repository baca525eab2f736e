"""The authsvc access-token profile (RFC 9068, pinned per RFC 8725 section 3): which JWS header
and which claims are acceptable. Both the server and resource servers check tokens here.

Each function returns every check that fails, by name, so that `authsvc token inspect` can
show them one by one; an empty result means the token passes.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from authsvc.jose.dpop import bound_jkt
from authsvc.jose.jws import ALGORITHM, MalformedToken

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - the RFC 9068 media type
# RFC 9068 section 2.1: `at+jwt`; the full media type is accepted too (RFC 7515 section 4.1.9).
ACCESS_TOKEN_TYPES = (ACCESS_TOKEN_TYPE, "application/" + ACCESS_TOKEN_TYPE)
ALLOWED_HEADER = frozenset({"alg", "typ", "kid"})
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid")
MAX_KID_LENGTH = 256
MAX_ID_LENGTH = 64
# NumericDates past this (year 5138) are not ours; it also keeps floats exact.
_MAX_NUMERIC_DATE = 1e11


def header_problems(
    header: Mapping[str, Any], token_types: Collection[str] = ACCESS_TOKEN_TYPES
) -> dict[str, str]:
    """Every header check that fails, by name (header, alg, typ, kid)."""
    problems: dict[str, str] = {}
    extra = set(header) - ALLOWED_HEADER
    if extra:
        # jwk/jku/x5u/x5c/crit and friends are refused, never followed (RFC 8725 3.10).
        problems["header"] = f"unexpected header members {sorted(extra)}"
    if header.get("alg") != ALGORITHM:
        problems["alg"] = f"alg must be {ALGORITHM}, got {header.get('alg')!r}"
    # RFC 9068 section 4 / RFC 8725 section 3.11: explicit typing keeps other JWTs out.
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in token_types:
        problems["typ"] = f"typ must be {ACCESS_TOKEN_TYPE}, got {typ!r}"
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        problems["kid"] = "no usable kid in the header"
    return problems


def numeric_date(value: object) -> float | None:
    """RFC 7519 section 2 NumericDate: a JSON number (not a string, bool, NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or abs(value) > _MAX_NUMERIC_DATE:
        return None
    return float(value)


def claim_problems(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audience: str,
    leeway: float,
    now: float,
    required: Collection[str] = REQUIRED_CLAIMS,
) -> dict[str, str]:
    """Every claim check that fails, by name (required, iss, aud, exp, nbf, iat, types)."""
    problems: dict[str, str] = {}
    missing = [c for c in required if c not in claims]
    if missing:
        problems["required"] = f"missing claims {missing}"
    # Exact matches only: no prefix, suffix, case folding or audience arrays (authsvc never
    # issues arrays, so one here is not an authsvc access token).
    if claims.get("iss") != issuer:
        problems["iss"] = f"iss must be {issuer!r}, got {claims.get('iss')!r}"
    if claims.get("aud") != audience:
        problems["aud"] = f"aud must be {audience!r}, got {claims.get('aud')!r}"
    # RFC 7519 sections 4.1.4-4.1.6, with a small leeway for clock skew.
    exp = numeric_date(claims.get("exp"))
    if exp is None:
        problems["exp"] = "exp is missing or not a NumericDate"
    elif exp <= now - leeway:
        problems["exp"] = f"expired {now - exp:.0f} s ago"
    if "nbf" in claims:
        nbf = numeric_date(claims["nbf"])
        if nbf is None or nbf > now + leeway:
            problems["nbf"] = "nbf is not a NumericDate" if nbf is None else "not valid yet"
    if "iat" in claims:
        iat = numeric_date(claims["iat"])
        if iat is None:
            problems["iat"] = "iat is not a NumericDate"
        elif iat > now + leeway:
            problems["iat"] = "issued in the future"
        elif exp is not None and iat > exp:
            problems["iat"] = "issued after it expires"
    ids = [claims[c] for c in ("sub", "sid", "jti") if c in claims]
    if not all(isinstance(v, str) and 0 < len(v) <= MAX_ID_LENGTH for v in ids):
        problems["types"] = f"sub, sid and jti must be strings of 1 to {MAX_ID_LENGTH} characters"
    if not all(isinstance(claims.get(c, ""), str) for c in ("scope", "client_id")):
        problems["types"] = "scope and client_id must be strings"
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        problems["types"] = "roles must be a list of strings"
    try:
        bound_jkt(claims)
    except MalformedToken as exc:
        problems["cnf"] = exc.reason
    return problems
