"""Access tokens (RS256 JWTs, RFC 9068 profile) and opaque refresh tokens.

Verification is pinned (RFC 8725 section 3): one algorithm, our issuer and audience, the
`at+jwt` type, a fixed set of header members and required claims, and a size cap before any
parsing. Parsing is strict so that no two parsers can read one token differently: canonical
unpadded base64url only, UTF-8 JSON objects without duplicate members, NaN or deep nesting.
The signature itself is checked in one place, `verify_jws_signature`, which the public test
vectors (Wycheproof, RFC 7520) exercise. Issuing uses PyJWT; verifying does not.
Refresh tokens are random and stored only as keyed digests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from authsvc.errors import InvalidToken
from authsvc.security.keys import ALGORITHM, KeyRing

MAX_TOKEN_LENGTH = 8192
MAX_KID_LENGTH = 256
MAX_ID_LENGTH = 64
MAX_JSON_DEPTH = 16
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - the RFC 9068 media type
_ACCESS_TYPES = frozenset({ACCESS_TOKEN_TYPE, "application/" + ACCESS_TOKEN_TYPE})
_ALLOWED_HEADER = frozenset({"alg", "typ", "kid"})
_REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid")
_B64URL_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_MIN_RSA_BITS = 2048

REFRESH_PREFIX = "rt_"
_REFRESH_SHAPE = re.compile(r"^rt_[A-Za-z0-9_-]{43}$")


class MalformedToken(ValueError):
    """The token is not a well-formed compact JWS; callers turn this into InvalidToken."""


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(segment: str) -> bytes:
    """Strict base64url (RFC 7515 section 2): no padding, no other alphabet, canonical only.

    RFC 4648 section 3.5 lets decoders ignore non-zero trailing bits; we refuse them, so each
    byte string has exactly one accepted spelling.
    """
    if len(segment) % 4 == 1 or not _B64URL_SEGMENT.fullmatch(segment):
        raise MalformedToken("not base64url")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if _b64url(raw) != segment:
        raise MalformedToken("non-canonical base64url")
    return raw


def _json_depth(text: str) -> int:
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot be deeper than it has brackets: skip the scan (the common case)
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 section 5.2 / RFC 8725 section 3.2: duplicate member names are refused, not
    # resolved (different parsers pick different ones).
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise MalformedToken("duplicate member")
        result[name] = value
    return result


def _no_constants(name: str) -> Any:
    raise MalformedToken(f"{name} is not JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """UTF-8 (strict) JSON object, without duplicate members, NaN/Infinity or deep nesting."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedToken("not UTF-8") from exc
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise MalformedToken("nested too deeply")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise MalformedToken("not JSON") from exc
    if not isinstance(value, dict):
        raise MalformedToken("not a JSON object")
    return value


@dataclass(frozen=True)
class CompactJWS:
    """The parts of a JWS in compact serialization (RFC 7515 section 7.1), not yet verified."""

    header: dict[str, Any]
    signing_input: bytes
    payload: bytes
    signature: bytes


def decode_compact(token: str) -> CompactJWS:
    """Split and decode without trusting anything; the size cap comes before any parsing."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise MalformedToken("too large")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[::2]):
        raise MalformedToken("not three segments")
    header_b64, payload_b64, signature_b64 = parts
    return CompactJWS(
        header=parse_json_object(b64url_decode(header_b64)),
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        payload=b64url_decode(payload_b64),
        signature=b64url_decode(signature_b64),
    )


def verify_jws_signature(token: str, key: rsa.RSAPublicKey) -> CompactJWS:
    """Check a compact JWS's signature with a pinned key and algorithm (RS256), nothing else.

    The one signature check authsvc has: AccessTokens.verify goes through it, and the
    Wycheproof and RFC 7520 vectors test it. `alg` must be exactly RS256 (RFC 8725 section
    3.1: the algorithm comes from us, the header only has to agree); `crit` is refused since
    we understand no extensions (RFC 7515 section 4.1.11); the key must be RSA of at least
    2048 bits (RFC 7518 section 3.3). Raises MalformedToken or InvalidSignature.
    """
    jws = decode_compact(token)
    if jws.header.get("alg") != ALGORITHM or "crit" in jws.header:
        raise MalformedToken("algorithm not allowed")
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < _MIN_RSA_BITS:
        raise MalformedToken("key not allowed")
    # RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 section 3.3); the signature is exactly k bytes.
    if len(jws.signature) != (key.key_size + 7) // 8:
        raise InvalidSignature()
    key.verify(jws.signature, jws.signing_input, padding.PKCS1v15(), hashes.SHA256())
    return jws


def public_key_from_jwk(jwk: Mapping[str, Any]) -> rsa.RSAPublicKey:
    """An RS256 verification key from a JWK, refusing keys not meant for it (RFC 7517 4.2-4.4).

    Only RSA keys whose `use` (if any) is `sig`, whose `key_ops` (if any) include `verify` and
    whose `alg` (if any) is RS256; at least 2048 bits.
    """
    if jwk.get("kty") != "RSA":
        raise MalformedToken("not an RSA key")
    if "use" in jwk and jwk["use"] != "sig":
        raise MalformedToken("key not for signatures")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise MalformedToken("key not for verification")
    if "alg" in jwk and jwk["alg"] != ALGORITHM:
        raise MalformedToken("key for another algorithm")
    n = int.from_bytes(b64url_decode(str(jwk["n"])), "big")
    e = int.from_bytes(b64url_decode(str(jwk["e"])), "big")
    key = rsa.RSAPublicNumbers(e, n).public_key()
    if key.key_size < _MIN_RSA_BITS:
        raise MalformedToken("key too small")
    return key


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
        try:
            aud = parse_json_object(decode_compact(token).payload).get("aud")
        except Exception:  # hostile input: simply not one of ours
            return None
        return aud if isinstance(aud, str) else None

    def _verify(self, token: str, ring: KeyRing, now: datetime, audience: str) -> AccessClaims:
        # The header is read (strictly) before the signature only to pick the key; nothing in
        # it is trusted until the signature over it verifies.
        header = decode_compact(token).header
        if set(header) - _ALLOWED_HEADER or header.get("alg") != ALGORITHM:
            # jwk/jku/x5u/x5c/crit and friends are refused, never followed (RFC 8725 3.10).
            raise InvalidToken()
        typ = header.get("typ")
        # RFC 9068 section 4 / RFC 8725 section 3.11: explicit typing keeps other JWTs out.
        if not isinstance(typ, str) or typ.lower() not in _ACCESS_TYPES:
            raise InvalidToken()
        kid = header.get("kid")
        if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
            raise InvalidToken()
        key = ring.verification_key(kid, now)
        if key is None:
            raise InvalidToken()
        payload = parse_json_object(verify_jws_signature(token, key.public).payload)
        return self._claims(payload, now, audience)

    def _claims(self, payload: dict[str, Any], now: datetime, audience: str) -> AccessClaims:
        for name in _REQUIRED_CLAIMS:
            if name not in payload:
                raise InvalidToken()
        # Exact matches only: no prefix, suffix, case folding or audience arrays (we never
        # issue arrays, so one here is not ours).
        if payload["iss"] != self.issuer or payload["aud"] != audience:
            raise InvalidToken()
        exp, nbf, iat = (_numeric_date(payload[n]) for n in ("exp", "nbf", "iat"))
        ts = now.timestamp()
        if exp <= ts - self.leeway or nbf > ts + self.leeway or iat > ts + self.leeway:
            raise InvalidToken()
        if iat > exp:
            raise InvalidToken()
        sub, sid, jti = payload["sub"], payload["sid"], payload["jti"]
        for value in (sub, sid, jti):
            if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
                raise InvalidToken()
        roles = payload.get("roles", [])
        scope = payload.get("scope", "")
        client_id = payload.get("client_id", "")
        if not isinstance(scope, str) or not isinstance(client_id, str):
            raise InvalidToken()
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise InvalidToken()
        return AccessClaims(
            sub=sub,
            sid=sid,
            jti=jti,
            roles=roles,
            scope=scope,
            client_id=client_id,
            issued_at=int(iat),
            expires_at=int(exp),
        )


def _numeric_date(value: object) -> float:
    """RFC 7519 section 2 NumericDate: a JSON number (not a string, bool, NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken()
    if not math.isfinite(value) or abs(value) > 1e11:
        raise InvalidToken()
    return float(value)


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
