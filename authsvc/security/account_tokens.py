"""One-time link tokens for mails (verify an address, reset a password): `at_` + 256 random
bits, kept only as HMAC-SHA256 digests under their own server key (derived from the KEK, like
the refresh-token digest key), so a copy of the database redeems nothing."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable

from authsvc.jose.jws import b64url_encode

ACCOUNT_TOKEN_PREFIX = "at_"  # noqa: S105 - a prefix, not a secret
_SHAPE = re.compile(r"^at_[A-Za-z0-9_-]{43}$")


class AccountTokens:
    def __init__(self, digest_key: Callable[[], bytes]) -> None:
        # A source, not the key: the server's HMAC keys are loaded after the app is built.
        self._digest_key = digest_key

    @staticmethod
    def new() -> str:
        return ACCOUNT_TOKEN_PREFIX + b64url_encode(secrets.token_bytes(32))

    @staticmethod
    def well_formed(token: str) -> bool:
        return bool(_SHAPE.match(token))

    def digest(self, token: str) -> bytes:
        return hmac.new(self._digest_key(), token.encode(), hashlib.sha256).digest()
