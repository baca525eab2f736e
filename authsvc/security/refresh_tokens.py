"""Opaque refresh tokens: `rt_` + 256 random bits, kept only as HMAC-SHA256 digests."""

from __future__ import annotations

from authsvc.jose.jws import b64url_encode
from authsvc.security.opaque import OpaqueTokens
from authsvc.security.secrets import ServerSecrets

REFRESH_PREFIX = "rt_"


class RefreshTokens(OpaqueTokens):
    """Opaque refresh tokens (security/opaque.py) with a successor.

    A token's successor is derived from it (HMAC under a second server key), so an honest retry
    inside the grace window can be handed the same successor again without the server ever
    storing a token in plaintext. Both keys are the server's stored HMAC keys (not derived from
    the key-encryption key), so a KEK rotation leaves every digest as it was.
    """

    def __init__(self, secrets: ServerSecrets) -> None:
        super().__init__(REFRESH_PREFIX, secrets, "refresh_digest")

    def successor(self, token: str) -> str:
        return self.prefix + b64url_encode(self._secrets.mac("refresh_successor", token))
