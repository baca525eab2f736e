"""DPoP proofs (RFC 9449): parse and check a proof JWT, and the JWK thumbprint it binds to.

A proof is a JWS the client signs with a key it holds, carrying that key's public half in its
header (`jwk`), the request's method (`htm`) and URI (`htu`), the time (`iat`), a unique id
(`jti`) and, at a resource server, the hash of the access token it accompanies (`ath`). A token
bound to the key carries the key's RFC 7638 thumbprint as `cnf.jkt` (RFC 9449 section 6.1).

Only what needs no state is checked here (section 4.3, steps 1 to 11 but the replay and nonce
bookkeeping): the caller remembers each `jti` for as long as the proof could be accepted (the
`replay_ttl`), and issues nonces. Standard library and `cryptography` only: the server and
`authsvc.verifier` both import this.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from authsvc.jose.jws import (
    CompactJWS,
    MalformedToken,
    b64url_decode,
    b64url_encode,
    decode_compact,
    public_key_from_jwk,
    verify_signature,
)

PROOF_TYPE = "dpop+jwt"
# RFC 9449 section 4.2: asymmetric algorithms only; these two are what we verify.
ALGORITHMS = ("ES256", "RS256")
MAX_RSA_BITS = 4096  # a bigger key only makes every check slower
MAX_JTI_LENGTH = 256
MAX_NONCE_LENGTH = 256
_ALLOWED_HEADER = frozenset({"typ", "alg", "jwk", "kid"})
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
# RFC 7638 section 3.2: the required members of each key type, the only ones hashed.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class InvalidProof(ValueError):
    """The proof is refused. `reason` is for logs, never for the caller."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Proof:
    """A proof that passed every stateless check."""

    jkt: str  # the RFC 7638 thumbprint of its key
    jti: str
    iat: float
    nonce: str | None


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638: base64url SHA-256 of the key's required members, in lexical order, no spaces."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise InvalidProof("no thumbprint for this key")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def access_token_hash(access_token: str) -> str:
    """RFC 9449 section 4.2 `ath`: base64url SHA-256 of the access token's ASCII."""
    return b64url_encode(hashlib.sha256(access_token.encode("ascii", "replace")).digest())


def normalize_uri(uri: str) -> str:
    """A request URI as `htu` is compared (RFC 9449 section 4.3 step 9): without query and
    fragment, after syntax- and scheme-based normalisation (RFC 3986 sections 6.2.2, 6.2.3):
    scheme and host lowercased, the default port dropped, an empty path as "/", percent-encoding
    in upper case and unreserved characters decoded. ValueError if it is not an http(s) URI."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        raise ValueError("not an absolute http(s) URI")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal: urlsplit dropped the brackets
    port = parts.port  # ValueError for a bad port
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _PERCENT.sub(_normal_escape, parts.path) or "/"
    return urlunsplit((scheme, netloc, path, "", ""))


def _normal_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(0)[1:], 16))
    return char if char in _UNRESERVED else match.group(0).upper()


def proof_key(jwk: object) -> tuple[ec.EllipticCurvePublicKey | rsa.RSAPublicKey, str]:
    """The public key in a proof's `jwk` header and the algorithm it is for; only public keys
    (RFC 9449 section 4.3 step 7): a JWK with private members is refused."""
    if not isinstance(jwk, dict):
        raise InvalidProof("no jwk header")
    if any(m in jwk for m in _PRIVATE_MEMBERS):
        raise InvalidProof("private key members in the jwk")
    kty = jwk.get("kty")
    if kty == "EC":
        if jwk.get("crv") != "P-256":
            raise InvalidProof("EC keys must be P-256")
        try:
            x, y = b64url_decode(str(jwk.get("x", ""))), b64url_decode(str(jwk.get("y", "")))
            if len(x) != 32 or len(y) != 32:
                raise InvalidProof("bad P-256 coordinates")
            key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()  # ValueError for a point not on the curve
        except ValueError as exc:
            raise InvalidProof("not a usable P-256 key") from exc
        return key, "ES256"
    if kty == "RSA":
        try:
            rsa_key = public_key_from_jwk(jwk)
        except MalformedToken as exc:
            raise InvalidProof(exc.reason) from exc
        if rsa_key.key_size > MAX_RSA_BITS:
            raise InvalidProof("RSA key too large")
        return rsa_key, "RS256"
    raise InvalidProof("unsupported key type")


def _check_signature(
    jws: CompactJWS, key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, alg: str
) -> None:
    if jws.header.get("alg") != alg:
        raise InvalidProof("alg does not match the key")
    try:
        if isinstance(key, rsa.RSAPublicKey):
            verify_signature(jws, key)
            return
        # RFC 7518 section 3.4: ES256 signatures are R || S, 32 bytes each.
        if len(jws.signature) != 64:
            raise InvalidProof("bad signature")
        r = int.from_bytes(jws.signature[:32], "big")
        s = int.from_bytes(jws.signature[32:], "big")
        key.verify(encode_dss_signature(r, s), jws.signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise InvalidProof("bad signature") from exc
    except MalformedToken as exc:
        raise InvalidProof(exc.reason) from exc


def verify_proof(
    proof: str,
    *,
    method: str,
    uri: str,
    now: float,
    max_age: float,
    leeway: float,
    access_token: str | None = None,
    nonce: str | None = None,
) -> Proof:
    """RFC 9449 section 4.3, but for remembering the jti and issuing nonces (the caller's).

    `uri` is the request's URI as the server itself knows its base URL (never a Host header a
    client picks); `iat` must be within `max_age` seconds before `now` and at most `leeway`
    after it; `access_token` (at a resource server) must hash to `ath`; `nonce`, when the
    server requires one, must be echoed. Raises InvalidProof.
    """
    try:
        jws = decode_compact(proof)
    except MalformedToken as exc:
        raise InvalidProof(exc.reason) from exc
    header = jws.header
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() != PROOF_TYPE:
        raise InvalidProof("typ must be dpop+jwt")
    if header.get("alg") not in ALGORITHMS:
        raise InvalidProof("alg not allowed")
    extra = set(header) - _ALLOWED_HEADER
    if extra:
        raise InvalidProof(f"unexpected header members {sorted(extra)}")
    key, alg = proof_key(header.get("jwk"))
    _check_signature(jws, key, alg)
    try:
        claims = jws.claims()
    except MalformedToken as exc:
        raise InvalidProof(exc.reason) from exc
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise InvalidProof("no usable jti")
    htm = claims.get("htm")
    if not isinstance(htm, str) or htm != method.upper():
        raise InvalidProof("htm does not match the request method")
    htu = claims.get("htu")
    try:
        matches = isinstance(htu, str) and normalize_uri(htu) == normalize_uri(uri)
    except ValueError:
        matches = False
    if not matches:
        raise InvalidProof("htu does not match the request URI")
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        raise InvalidProof("iat is not a NumericDate")
    if not now - max_age <= iat <= now + leeway:
        raise InvalidProof("iat outside the accepted window")
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(
            ath, access_token_hash(access_token)
        ):
            raise InvalidProof("ath does not match the access token")
    sent_nonce = claims.get("nonce")
    if sent_nonce is not None and (
        not isinstance(sent_nonce, str) or len(sent_nonce) > MAX_NONCE_LENGTH
    ):
        raise InvalidProof("nonce is not a string")
    if nonce is not None and sent_nonce != nonce:
        raise InvalidProof("nonce missing or stale")
    return Proof(jkt=thumbprint(header["jwk"]), jti=jti, iat=float(iat), nonce=sent_nonce)


def replay_ttl(max_age: float, leeway: float) -> float:
    """How long a proof's jti must be remembered: as long as its iat can still be accepted."""
    return max_age + 2 * leeway


def bound_jkt(claims: Mapping[str, Any]) -> str | None:
    """An access token's `cnf.jkt` (RFC 9449 section 6.1), or None if it is not DPoP-bound.
    MalformedToken for a `cnf` that is there but not a thumbprint."""
    if "cnf" not in claims:
        return None
    cnf = claims["cnf"]
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if not isinstance(jkt, str) or len(jkt) != 43:
        raise MalformedToken("cnf is not a jkt confirmation")
    return jkt


def replay_key(proof: Proof) -> str:
    """A bounded key for a proof's jti, per signing key (the jti is the client's choice)."""
    return b64url_encode(hashlib.sha256(f"{proof.jkt}.{proof.jti}".encode()).digest()[:18])


class MemoryReplayCache:
    """Proof jtis seen in this process, each kept for its ttl; at most `max_entries`.

    Entries arrive with one ttl, so insertion order is expiry order: expired ones are dropped
    from the front. When full of live entries the oldest is dropped too: under a flood beyond
    `max_entries` proofs per ttl, the oldest proofs could be replayed, rather than every new
    proof being refused.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._seen: dict[str, float] = {}

    async def first_use(self, key: str, ttl: float, now: float) -> bool:
        """True the first time `key` is seen within its ttl, False for a replay."""
        expiry = self._seen.get(key)
        if expiry is not None and expiry > now:
            return False
        self._seen.pop(key, None)
        seen = self._seen
        while seen:
            oldest, until = next(iter(seen.items()))
            if until > now and len(seen) < self.max_entries:
                break
            del seen[oldest]
        seen[key] = now + ttl
        return True
