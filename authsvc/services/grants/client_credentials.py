"""The client credentials grant (RFC 6749 section 4.4): a confidential client asks for an access
token for itself, not for a user.

The token's `sub` and `client_id` are the client (RFC 9068 section 2.2); its scope is within
the client's (ClientService.grantable_scope), without OpenID Connect's scopes, which describe a
user; no refresh token is issued (section 4.4.3) and no session row is written. It is revoked
by jti (RFC 7009, the denylist) or all at once by deleting the client.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.errors import InvalidScope, UnauthorizedClient
from authsvc.services.clients import OIDC_SCOPES, ClientService
from authsvc.services.context import RequestContext
from authsvc.services.issuer import TokenIssuer, TokenPair
from authsvc.store.models import OAuthClient

GRANT_TYPE = "client_credentials"


class ClientCredentialsGrant:
    def __init__(self, clients: ClientService, issuer: TokenIssuer) -> None:
        self.clients = clients
        self.issuer = issuer

    async def __call__(
        self,
        db: AsyncSession,
        client: OAuthClient,
        params: Mapping[str, str],
        ctx: RequestContext,
    ) -> TokenPair:
        """RFC 6749 section 4.4.2: only `scope`; the client is already authenticated."""
        if not client.is_confidential:
            # Section 4.4: "MUST only be used by confidential clients" (registration refuses
            # it too; this holds if a row was edited by hand).
            raise UnauthorizedClient()
        scope = self.clients.grantable_scope(client, params.get("scope"))
        if set(scope.split()) & set(OIDC_SCOPES):
            raise InvalidScope("OpenID Connect scopes describe a user; this token is the client's.")
        ring = await self.issuer.signing_ring(db, ctx.now)
        # RFC 9449 section 5: with a DPoP proof the token is bound to its key.
        return self.issuer.sign_for_client(
            ring,
            client.client_id,
            self.clients.audience_for(client),
            scope,
            ctx.now,
            jkt=ctx.dpop_jkt,
        )
