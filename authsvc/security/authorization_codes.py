"""Authorization codes (RFC 6749 section 4.1.2) and PKCE (RFC 7636), S256 only.

A code is `ac_` + 256 random bits (RFC 9700 section 4.5.3 asks for codes no one can guess) and
is kept only as an HMAC-SHA256 digest under one of the server's HMAC keys (security/opaque.py).
"""

from __future__ import annotations

import hashlib
import hmac
import re

from authsvc.jose.jws import b64url_encode
from authsvc.security.opaque import OpaqueTokens
from authsvc.security.secrets import ServerSecrets

CODE_PREFIX = "ac_"
# RFC 7636 section 4.1: code_verifier = 43*128unreserved.
_VERIFIER_SHAPE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
# An S256 challenge is the base64url SHA-256 of a verifier: always 43 characters.
_S256_CHALLENGE_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")


class AuthorizationCodes(OpaqueTokens):
    def __init__(self, secrets: ServerSecrets) -> None:
        super().__init__(CODE_PREFIX, secrets, "authorization_code")


def valid_s256_challenge(challenge: str) -> bool:
    return bool(_S256_CHALLENGE_SHAPE.match(challenge))


def s256(verifier: str) -> str:
    """RFC 7636 section 4.2: BASE64URL(SHA256(ASCII(code_verifier)))."""
    return b64url_encode(hashlib.sha256(verifier.encode("ascii")).digest())


def verifier_matches(verifier: str, challenge: str) -> bool:
    """RFC 7636 section 4.6, compared in constant time; a malformed verifier never matches."""
    if not _VERIFIER_SHAPE.match(verifier):
        return False
    return hmac.compare_digest(s256(verifier).encode(), challenge.encode())
