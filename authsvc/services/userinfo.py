"""The UserInfo endpoint's rules (OpenID Connect Core 1.0 section 5.3): the claims about the
user an access token with scope `openid` speaks for, chosen by its scopes (section 5.4)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.errors import InsufficientScope
from authsvc.services.access import AccessService, Presented
from authsvc.services.context import RequestContext

# The claims UserInfo may answer, by scope (section 5.4); `sub` always (section 5.3.2).
SCOPE_CLAIMS: dict[str, tuple[str, ...]] = {
    "openid": ("sub",),
    "profile": ("preferred_username",),
    # "email": ("email", "email_verified") once users have an email address; until then the
    # scope may be granted but adds nothing (section 5.3.2: claims without a value are omitted).
    "email": (),
}
_INSUFFICIENT = 'error="insufficient_scope", scope="openid"'
USERINFO_CLAIMS = tuple(dict.fromkeys(c for claims in SCOPE_CLAIMS.values() for c in claims))


class UserInfoService:
    def __init__(self, access: AccessService) -> None:
        self.access = access

    async def claims(
        self, db: AsyncSession, token: Presented, ctx: RequestContext
    ) -> dict[str, Any]:
        """Through the one access check (services/access.py), so a revoked session, a denied
        jti, a disabled user or a client's own token are all refused with invalid_token."""
        principal = await self.access.me(db, token, ctx)
        scopes = set(principal.claims.scope.split())
        if "openid" not in scopes:
            # RFC 6750 section 3.1: the token is valid but does not grant this.
            raise InsufficientScope(
                "The access token was not granted the openid scope.",
                headers={"WWW-Authenticate": f"{_scheme(token)} {_INSUFFICIENT}"},
            )
        info: dict[str, Any] = {"sub": str(principal.user_id)}
        if "profile" in scopes:
            # No separate display name is stored: the username is all we know (section 5.1).
            info["preferred_username"] = principal.username
        # if "email" in scopes: email and email_verified go here once users have an email.
        return info


def _scheme(token: Presented) -> str:
    # RFC 9449 section 7.1: a DPoP-bound token's challenge names the DPoP scheme.
    return "Bearer" if isinstance(token, str) else token.scheme
