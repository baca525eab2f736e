"""Opaque tokens: a prefix and 256 random bits (base64url, 43 characters), kept only as an
HMAC-SHA256 digest under one of the server's HMAC keys, so a copy of the database redeems
nothing and a lookup by digest finds the row.

Refresh tokens (`rt_`), authorization codes (`ac_`), mailed account links (`at_`), mfa tokens
(`mfa_`) and client secrets (`cs_`) are all made and digested here, each under its own key. The
prefix tells a reader (and a secret scanner) what a leaked value is; the shape check lets a
service refuse what it never issued before it queries the database.
"""

from __future__ import annotations

import hmac
import re
from secrets import token_bytes

from authsvc.jose.jws import b64url_encode
from authsvc.security.secrets import HmacKeyName, ServerSecrets

RANDOM_BYTES = 32  # RFC 9700 section 4.5.3 and RFC 6749 section 10.10: unguessable
_RANDOM_CHARS = 43  # base64url of 32 bytes, unpadded


class OpaqueTokens:
    def __init__(self, prefix: str, secrets: ServerSecrets, key: HmacKeyName) -> None:
        self.prefix = prefix
        self.key = key
        self._secrets = secrets
        self._shape = re.compile(re.escape(prefix) + f"[A-Za-z0-9_-]{{{_RANDOM_CHARS}}}")

    def new(self) -> str:
        return self.prefix + b64url_encode(token_bytes(RANDOM_BYTES))

    def well_formed(self, token: str) -> bool:
        return self._shape.fullmatch(token) is not None

    def digest(self, token: str) -> bytes:
        return self._secrets.mac(self.key, token)

    @staticmethod
    def same_digest(a: bytes, b: bytes) -> bool:
        return hmac.compare_digest(a, b)
