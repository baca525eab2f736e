"""One-time link tokens for mails (verify an address, reset a password): `at_` + 256 random
bits, kept only as HMAC-SHA256 digests under their own server key (security/opaque.py), so a
copy of the database redeems nothing."""

from __future__ import annotations

from authsvc.security.opaque import OpaqueTokens
from authsvc.security.secrets import ServerSecrets

ACCOUNT_TOKEN_PREFIX = "at_"  # noqa: S105 - a prefix, not a secret


class AccountTokens(OpaqueTokens):
    def __init__(self, secrets: ServerSecrets) -> None:
        super().__init__(ACCOUNT_TOKEN_PREFIX, secrets, "account_token")
