"""Compact JWS (RFC 7515) with RS256 (RFC 7518 section 3.3): parsing, signature check, JWK keys.

Parsing is strict so that no two parsers can read one token differently: a size cap before any
parsing, canonical unpadded base64url only, UTF-8 JSON objects without duplicate members,
NaN/Infinity or deep nesting. The signature is checked in one place, `verify_signature`, which
the public test vectors (Wycheproof, RFC 7520) exercise.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ALGORITHM = "RS256"
MAX_TOKEN_LENGTH = 8192
MAX_JSON_DEPTH = 16
MIN_RSA_BITS = 2048
_B64URL_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")
_PADDING = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


class MalformedToken(ValueError):
    """Refused before or instead of a signature check. `reason` is for logs, never the caller."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(segment: str) -> bytes:
    """Strict base64url (RFC 7515 section 2): no padding, no other alphabet, canonical only.

    RFC 4648 section 3.5 lets decoders ignore non-zero trailing bits; we refuse them, so each
    byte string has exactly one accepted spelling (and one entry in a verified-token cache).
    """
    if len(segment) % 4 == 1 or not _B64URL_SEGMENT.fullmatch(segment):
        raise MalformedToken("not base64url")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if b64url_encode(raw) != segment:
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
    except MalformedToken:
        raise
    except ValueError as exc:  # not JSON, or an integer beyond Python's digit limit
        raise MalformedToken("not JSON") from exc
    if not isinstance(value, dict):
        raise MalformedToken("not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class CompactJWS:
    """The parts of a JWS in compact serialization (RFC 7515 section 7.1), not yet verified.

    The payload is decoded from base64url but not parsed: its JSON is read only once the
    signature over it verifies (`claims`).
    """

    header: dict[str, Any]
    signing_input: bytes
    payload: bytes
    signature: bytes

    def claims(self) -> dict[str, Any]:
        return parse_json_object(self.payload)


def decode_compact(token: str) -> CompactJWS:
    """Split and decode without trusting anything; the size cap comes before any parsing."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise MalformedToken("not a string of bounded size")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[::2]):
        raise MalformedToken("not three segments")
    header_b64, payload_b64, signature_b64 = parts
    header = parse_json_object(b64url_decode(header_b64))
    payload = b64url_decode(payload_b64)
    signature = b64url_decode(signature_b64)
    return CompactJWS(
        header=header,
        # ASCII by now: each segment decoded as base64url.
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        payload=payload,
        signature=signature,
    )


def verify_signature(jws: CompactJWS, key: rsa.RSAPublicKey) -> None:
    """Check a decoded JWS's signature with a pinned key and algorithm (RS256), nothing else.

    `alg` must be exactly RS256 (RFC 8725 section 3.1: the algorithm comes from us, the header
    only has to agree); `crit` is refused since we understand no extensions (RFC 7515 section
    4.1.11); the key must be RSA of at least 2048 bits (RFC 7518 section 3.3).
    Raises MalformedToken or InvalidSignature.
    """
    if jws.header.get("alg") != ALGORITHM or "crit" in jws.header:
        raise MalformedToken("algorithm not allowed")
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
        raise MalformedToken("key not allowed")
    # RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 section 3.3); the signature is exactly k bytes.
    if len(jws.signature) != (key.key_size + 7) // 8:
        raise InvalidSignature()
    key.verify(jws.signature, jws.signing_input, _PADDING, _SHA256)


def public_key_from_jwk(jwk: Mapping[str, Any]) -> rsa.RSAPublicKey:
    """An RS256 verification key from a JWK, refusing keys not meant for it (RFC 7517 4.2-4.4).

    Only public RSA keys whose `use` (if any) is `sig`, whose `key_ops` (if any) include
    `verify` and whose `alg` (if any) is RS256; at least 2048 bits. A JWK with private members
    is refused: publishing one is the publisher's bug, and using it would hide that.
    Raises MalformedToken.
    """
    if jwk.get("kty") != "RSA":
        raise MalformedToken("not an RSA key")
    if any(name in jwk for name in _PRIVATE_JWK_MEMBERS):
        raise MalformedToken("private key members")
    if "use" in jwk and jwk["use"] != "sig":
        raise MalformedToken("key not for signatures")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise MalformedToken("key not for verification")
    if "alg" in jwk and jwk["alg"] != ALGORITHM:
        raise MalformedToken("key for another algorithm")
    n, e = jwk.get("n"), jwk.get("e")
    if not isinstance(n, str) or not isinstance(e, str):
        raise MalformedToken("no modulus or exponent")
    try:
        key = rsa.RSAPublicNumbers(
            int.from_bytes(b64url_decode(e), "big"), int.from_bytes(b64url_decode(n), "big")
        ).public_key()
    except ValueError as exc:  # MalformedToken is one too; cryptography's own checks
        raise MalformedToken(f"not a usable RSA key: {exc}") from exc
    if key.key_size < MIN_RSA_BITS:
        raise MalformedToken("key too small")
    return key
