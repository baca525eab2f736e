"""Opaque refresh tokens: `rt_` + 256 random bits, kept only as HMAC-SHA256 digests."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from authsvc.jose.jws import b64url_encode
from authsvc.security.secrets import ServerSecrets

REFRESH_PREFIX = "rt_"
_REFRESH_SHAPE = re.compile(r"^rt_[A-Za-z0-9_-]{43}$")


class RefreshTokens:
    """Opaque refresh tokens: `rt_` + 256 random bits, kept only as HMAC-SHA256 digests.

    A token's successor is derived from it (HMAC under a second server key), so an honest retry
    inside the grace window can be handed the same successor again without the server ever
    storing a token in plaintext. Both keys are the server's stored HMAC keys (not derived from
    the key-encryption key), so a KEK rotation leaves every digest as it was.
    """

    def __init__(self, secrets: ServerSecrets) -> None:
        self._secrets = secrets

    @staticmethod
    def new() -> str:
        return REFRESH_PREFIX + b64url_encode(secrets.token_bytes(32))

    @staticmethod
    def well_formed(token: str) -> bool:
        return bool(_REFRESH_SHAPE.match(token))

    def successor(self, token: str) -> str:
        mac = hmac.new(
            self._secrets.hmac.refresh_successor, token.encode(), hashlib.sha256
        ).digest()
        return REFRESH_PREFIX + b64url_encode(mac)

    def digest(self, token: str) -> bytes:
        return hmac.new(self._secrets.hmac.refresh_digest, token.encode(), hashlib.sha256).digest()

    @staticmethod
    def same_digest(a: bytes, b: bytes) -> bool:
        return hmac.compare_digest(a, b)
