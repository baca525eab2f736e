"""CSRF tokens for the hosted login and consent forms: a random value in a cookie, and in the
form its HMAC under a server key (the signed double-submit pattern). A cross-site page can make
a browser send the cookie but can neither read it nor compute the form value."""

from __future__ import annotations

import hmac
import secrets

from authsvc.jose.jws import b64url_encode
from authsvc.security.secrets import ServerSecrets

MAX_COOKIE = 64


class CsrfTokens:
    def __init__(self, secrets: ServerSecrets) -> None:
        self._secrets = secrets

    @staticmethod
    def new_cookie() -> str:
        return b64url_encode(secrets.token_bytes(32))

    def form_token(self, cookie: str) -> str:
        return b64url_encode(self._secrets.mac("login_page", cookie))

    def check(self, cookie: str | None, token: str | None) -> bool:
        """Constant time; a missing or oversized cookie or token never passes."""
        if not cookie or not token or len(cookie) > MAX_COOKIE or len(token) > MAX_COOKIE:
            return False
        return hmac.compare_digest(self.form_token(cookie).encode(), token.encode())
