"""Signing keys: generation, encryption at rest, JWK export, and the in-memory key ring.

A key's life: created and published in the JWKS at once; signs from `activates_at` (after
resource servers' JWKS caches had time to see it); stops signing at `retires_at`; stays published
until no token it signed can still be valid.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from authsvc.jose.jws import ALGORITHM as ALGORITHM  # what every key here signs with


def b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def generate_private_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_jwk(public: rsa.RSAPublicKey) -> dict[str, Any]:
    """RFC 7517 section 4 / RFC 7518 section 6.3.1: public members only, never d, p, q, ..."""
    numbers = public.public_numbers()
    jwk: dict[str, Any] = {"kty": "RSA", "n": b64url_uint(numbers.n), "e": b64url_uint(numbers.e)}
    jwk["kid"] = thumbprint(jwk)
    jwk["use"] = "sig"
    jwk["alg"] = ALGORITHM
    return jwk


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256): a kid that names the key itself."""
    canonical = json.dumps(
        {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Encrypter(Protocol):
    """What encrypts keys at rest: the KEK ring (security/secrets.py), or a bare Fernet."""

    def encrypt(self, data: bytes) -> bytes: ...

    def decrypt(self, blob: bytes) -> bytes: ...


def encrypt_private_key(key: rsa.RSAPrivateKey, fernet: Encrypter) -> bytes:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return fernet.encrypt(pem)


def decrypt_private_key(blob: bytes, fernet: Encrypter) -> rsa.RSAPrivateKey:
    return load_private_key(fernet.decrypt(blob))


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    # The blob it came from is authenticated by the KEK (a forged or altered one fails to
    # decrypt), so it is byte for byte a key this server generated. Re-validating its RSA
    # parameters costs about 0.2 s per 2048-bit key on every start and in every process that
    # picks up a new key, and would only re-check our own output.
    key = serialization.load_pem_private_key(
        pem, password=None, unsafe_skip_rsa_key_validation=True
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("stored signing key is not an RSA key")
    return key


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    private: rsa.RSAPrivateKey
    public: rsa.RSAPublicKey
    jwk: dict[str, Any]
    created_at: datetime
    activates_at: datetime
    retires_at: datetime | None

    def state(self, now: datetime, unpublish_after: timedelta) -> str:
        if self.retires_at is not None and now >= self.retires_at + unpublish_after:
            return "expired"
        if self.retires_at is not None and now >= self.retires_at:
            return "retired"
        if now < self.activates_at:
            return "published"
        return "active"


class KeyRing:
    """An immutable snapshot of the signing keys; swapped whole when the table changes."""

    def __init__(self, keys: list[LoadedKey], unpublish_after: timedelta) -> None:
        # Newest activation first, kid as the tie-break, so every process picks the same key.
        self.keys = sorted(keys, key=lambda k: (k.activates_at, k.kid), reverse=True)
        self.unpublish_after = unpublish_after
        self._by_kid = {k.kid: k for k in self.keys}

    def signing_key(self, now: datetime) -> LoadedKey | None:
        for key in self.keys:
            if key.state(now, self.unpublish_after) == "active":
                return key
        return None

    def published(self, now: datetime) -> list[LoadedKey]:
        return [k for k in self.keys if k.state(now, self.unpublish_after) != "expired"]

    def verification_key(self, kid: str, now: datetime) -> LoadedKey | None:
        key = self._by_kid.get(kid)
        if key is None or key.state(now, self.unpublish_after) == "expired":
            return None
        return key

    def jwks(self, now: datetime) -> dict[str, Any]:
        return {"keys": [dict(k.jwk) for k in self.published(now)]}
