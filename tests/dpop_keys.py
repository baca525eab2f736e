"""DPoP proofs for tests, made with `cryptography` alone (RFC 9449 section 4.2)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class ProofKey:
    """A client's DPoP key pair: ES256 (P-256) or RS256 (RSA 2048)."""

    def __init__(self, alg: str = "ES256") -> None:
        self.alg = alg
        self.private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        if alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            numbers = self.private.public_key().public_numbers()
            self.jwk: dict[str, str] = {
                "kty": "EC",
                "crv": "P-256",
                "x": b64(numbers.x.to_bytes(32, "big")),
                "y": b64(numbers.y.to_bytes(32, "big")),
            }
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pub = self.private.public_key().public_numbers()
            self.jwk = {
                "kty": "RSA",
                "n": b64(pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")),
                "e": b64(pub.e.to_bytes(3, "big")),
            }

    @property
    def jkt(self) -> str:
        """RFC 7638 thumbprint, computed here independently of authsvc."""
        members = ("crv", "kty", "x", "y") if self.jwk["kty"] == "EC" else ("e", "kty", "n")
        canonical = json.dumps({m: self.jwk[m] for m in members}, separators=(",", ":"))
        return b64(hashlib.sha256(canonical.encode()).digest())

    def sign(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        signing_input = (
            b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        ).encode()
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            der = self.private.sign(signing_input, ec.ECDSA(hashes.SHA256()))
            r, s = decode_dss_signature(der)
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            signature = self.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode() + "." + b64(signature)

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        iat: float | None = None,
        jti: str | None = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        body: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16) if jti is None else jti,
            "htm": method,
            "htu": url,
            "iat": int(time.time() if iat is None else iat),
            **claims,
        }
        if access_token is not None:
            body["ath"] = b64(hashlib.sha256(access_token.encode()).digest())
        return self.sign(
            {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.jwk, **(header or {})}, body
        )
