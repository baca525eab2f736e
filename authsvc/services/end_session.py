"""RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): a client sends the user here to
end the session its ID token names, and may have them sent back afterwards.

- `id_token_hint` is required: it is how authsvc knows which session to end (there is no other
  sign-in state at this endpoint). It must be an ID token we signed; an expired one is fine
  (section 2).
- `client_id`, if sent, must be one the ID token was issued to (section 2).
- `post_logout_redirect_uri`, if sent, must be one of the client's registered redirect URIs,
  compared exactly (section 3: never redirect to an unregistered URI); `state` is passed back.
- The session named by the ID token's `sid` is revoked like a logout (the revocation feed hears
  of it) if it is still live and belongs to that user and client; a session already ended, or
  any other, is left alone and the answer is the same, so logging out twice is not an error.
- The hosted login page's browser sign-in (its cookie, services/authorize.py) ends too when it
  names the user the ID token names: otherwise the next authorization request would sign them
  straight back in. A cookie naming someone else is left alone, so a link carrying another
  user's ID token cannot sign a victim's browser out.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import OAuthInvalidRequest
from authsvc.security.id_token_hint import IdTokenHint, InvalidHint, read_id_token_hint
from authsvc.services.authorize import AuthorizeService
from authsvc.services.context import RequestContext
from authsvc.services.issuer import TokenIssuer
from authsvc.services.logout import LogoutService
from authsvc.store.clients import ClientRepository
from authsvc.store.repositories import SessionRepository

REASON = "end_session"
MAX_PARAM = 8192


@dataclass(frozen=True)
class Ended:
    """`redirect`: where to send the user next, or None to show a page. `clear_cookie`: the
    browser's sign-in cookie no longer signs anyone in (ended here, or already dead)."""

    redirect: str | None
    clear_cookie: bool


class EndSessionService:
    def __init__(
        self,
        settings: Settings,
        issuer: TokenIssuer,
        logout: LogoutService,
        authorize: AuthorizeService,
    ) -> None:
        self.settings = settings
        self.issuer = issuer
        self.logout = logout
        self.authorize = authorize

    async def end_session(
        self,
        db: AsyncSession,
        params: Mapping[str, str],
        browser_cookie: str | None,
        ctx: RequestContext,
    ) -> Ended:
        """End the session the ID token names and this browser's sign-in of the same user.

        Every check comes before anything is revoked, so a refused request changes nothing.
        OAuthInvalidRequest for a request that cannot be honoured (never redirected)."""
        if any(len(v) > MAX_PARAM for v in params.values()):
            raise OAuthInvalidRequest("A parameter is too long.")
        raw_hint = params.get("id_token_hint")
        if raw_hint is None:
            raise OAuthInvalidRequest("The id_token_hint parameter is required.")
        ring = await self.issuer.keys.ring_at(db, ctx.now)
        try:
            hint = read_id_token_hint(raw_hint, ring, ctx.now, issuer=self.settings.issuer)
        except InvalidHint:
            raise OAuthInvalidRequest(
                "The id_token_hint is not an ID token of this server."
            ) from None
        client_id = params.get("client_id")
        if client_id is not None and not hint.names_client(client_id):
            raise OAuthInvalidRequest("The client_id is not the one the ID token was issued to.")
        client_id = client_id or hint.client_id
        redirect = params.get("post_logout_redirect_uri")
        if redirect is not None:
            client = await ClientRepository(db).get(client_id) if client_id else None
            # Exact comparison, as for the authorization endpoint (RFC 9700 section 4.1.3).
            if client is None or redirect not in (client.redirect_uris or []):
                raise OAuthInvalidRequest(
                    "The post_logout_redirect_uri is not registered for this client."
                )
        await self._revoke(db, hint, ctx)  # raises before revoking anything if it cannot
        clear_cookie = await self._sign_out_browser(db, hint, browser_cookie, ctx)
        return Ended(_with_state(redirect, params.get("state")), clear_cookie)

    async def _sign_out_browser(
        self, db: AsyncSession, hint: IdTokenHint, cookie: str | None, ctx: RequestContext
    ) -> bool:
        """End the hosted page's sign-in if it is the hinted user's; True if the cookie no
        longer signs anyone in."""
        if cookie is None:
            return False
        signed_in = await self.authorize.signed_in(db, cookie, ctx.now)
        if signed_in is None:
            return True
        if signed_in.user_id != _uuid(hint.sub):
            return False
        await self.authorize.sign_out(db, cookie, ctx, REASON)
        return True

    async def _revoke(self, db: AsyncSession, hint: IdTokenHint, ctx: RequestContext) -> None:
        session_id, user_id = _uuid(hint.sid), _uuid(hint.sub)
        if session_id is None or user_id is None:
            # Our ID tokens name the user and the session (`sid`); without them there is
            # nothing this endpoint could end, and saying "signed out" would be a lie.
            raise OAuthInvalidRequest("The ID token names no session.")
        session = await SessionRepository(db).get(session_id)
        if (
            session is None
            or session.revoked_at is not None
            or session.user_id != user_id
            or session.client_id not in hint.audiences
        ):
            return
        await self.logout.revoke(
            db,
            ctx,
            user_id,
            session_id,
            [session_id],
            REASON,
            "local",
            details={"client_id": session.client_id or "", "via": REASON},
        )


def _with_state(redirect: str | None, state: str | None) -> str | None:
    if redirect is None or state is None:
        return redirect
    joiner = "&" if urlsplit(redirect).query else "?"
    return f"{redirect}{joiner}{urlencode({'state': state})}"


def _uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value is not None else None
    except ValueError:
        return None
