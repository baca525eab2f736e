"""The OAuth 2 adapter's rules: token (RFC 6749), revocation (RFC 7009), introspection
(RFC 7662) and server metadata (RFC 8414), over the same services as the JSON API."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import (
    InvalidGrant,
    InvalidToken,
    OAuthInvalidRequest,
    UnsupportedGrantType,
)
from authsvc.jose.dpop import ALGORITHMS as DPOP_ALGORITHMS
from authsvc.security.access_tokens import AccessClaims
from authsvc.security.keys import ALGORITHM
from authsvc.services.access import AccessService, is_client_token
from authsvc.services.clients import ClientCredentials, ClientService
from authsvc.services.context import RequestContext
from authsvc.services.grants.client_credentials import ClientCredentialsGrant
from authsvc.services.id_tokens import IdTokenService
from authsvc.services.issuer import TokenIssuer, TokenPair
from authsvc.services.login import LoginService
from authsvc.services.refresh import RefreshService
from authsvc.services.userinfo import USERINFO_CLAIMS
from authsvc.store.clients import ClientRepository
from authsvc.store.models import OAuthClient, RefreshToken, Session, User
from authsvc.store.repositories import (
    DenylistRepository,
    RefreshTokenRepository,
    SessionRepository,
)
from authsvc.store.rotation import live_token_in_session

MAX_PARAM = 16384  # generous: longer tokens are simply not ours
# What ID tokens and UserInfo may carry (OpenID Connect Discovery 1.0 section 3).
CLAIMS_SUPPORTED = (
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "azp",
    "amr",
    "sid",
    *USERINFO_CLAIMS[1:],  # sub is listed already
)
GrantHandler = Callable[
    [AsyncSession, OAuthClient, Mapping[str, str], RequestContext], Awaitable[TokenPair]
]


class OAuthService:
    def __init__(
        self,
        settings: Settings,
        clients: ClientService,
        issuer: TokenIssuer,
        login: LoginService,
        refresh: RefreshService,
        access: AccessService,
        authorization_code: GrantHandler,
        id_tokens: IdTokenService,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.issuer = issuer
        self.login = login
        self.refresh = refresh
        self.access = access
        self.authorization_code = authorization_code
        self.id_tokens = id_tokens

    # -- POST /oauth/token -------------------------------------------------------------------

    async def token(
        self,
        db: AsyncSession,
        creds: ClientCredentials,
        params: Mapping[str, str],
        ctx: RequestContext,
    ) -> TokenPair:
        """RFC 6749 section 3.2: authenticate the client, then hand over to its grant."""
        grant_type = required(params, "grant_type")
        client = await self.clients.authenticate(db, creds)
        handler = self._grants().get(grant_type)
        if handler is None:
            raise UnsupportedGrantType()
        self.clients.check_grant(client, grant_type)
        return await handler(db, client, params, ctx)

    def _grants(self) -> dict[str, GrantHandler]:
        """The grants /oauth/token answers, one handler each (a client may be registered for
        others that it cannot use yet)."""
        return {
            "password": self._password,
            "refresh_token": self._refresh,
            "client_credentials": ClientCredentialsGrant(self.clients, self.issuer),
            "authorization_code": self.authorization_code,
        }

    async def _password(
        self,
        db: AsyncSession,
        client: OAuthClient,
        params: Mapping[str, str],
        ctx: RequestContext,
    ) -> TokenPair:
        """RFC 6749 section 4.3.2."""
        username = required(params, "username")
        password = required(params, "password")
        scope = self.clients.grantable_scope(client, params.get("scope"))
        return await self.login.login(
            db,
            username,
            password,
            ctx,
            self.clients.grant(client, scope, ctx),
            second_factor="refuse",
        )

    async def _refresh(
        self,
        db: AsyncSession,
        client: OAuthClient,
        params: Mapping[str, str],
        ctx: RequestContext,
    ) -> TokenPair:
        """RFC 6749 section 6: the scope asked for may only narrow the session's."""
        refresh_token = required(params, "refresh_token")
        grant = self.clients.grant(client, _normal_scope(params.get("scope")), ctx)
        pair = await self.refresh.refresh(db, refresh_token, ctx, grant)
        return await self.id_tokens.on_refresh(db, pair, client.client_id, ctx.now)

    # -- POST /oauth/revoke ------------------------------------------------------------------

    async def revoke(
        self,
        db: AsyncSession,
        creds: ClientCredentials,
        params: Mapping[str, str],
        ctx: RequestContext,
    ) -> None:
        """RFC 7009 section 2.1. Unknown, expired or malformed tokens are not an error (2.2).

        A refresh token revokes its whole session (so its access tokens too); an access token
        is denylisted by jti. A token issued to another client is refused (invalid_grant).
        """
        now = ctx.now
        token = required(params, "token")
        client = await self.clients.authenticate(db, creds)
        # The hint only orders the search (section 2.1); our two kinds never look alike.
        found = await self._refresh_row(db, token)
        if found is not None:
            _, session, _ = found
            if session.client_id != client.client_id:
                raise InvalidGrant("The token was not issued to this client.")
            await SessionRepository(db).revoke(
                [session.id],
                now,
                "oauth_revoke",
                tokens_valid_until=now + self.settings.access_token_horizon,
            )
            return
        verified = await self._access_claims(db, token, now)
        if verified is None:
            return
        claims, _ = verified
        if claims.client_id != client.client_id:
            raise InvalidGrant("The token was not issued to this client.")
        await DenylistRepository(db).add(
            claims.jti,
            _uuid(claims.sid),
            datetime.fromtimestamp(claims.expires_at, tz=now.tzinfo),
            now,
        )

    # -- POST /oauth/introspect --------------------------------------------------------------

    async def introspect(
        self,
        db: AsyncSession,
        creds: ClientCredentials,
        params: Mapping[str, str],
        ctx: RequestContext,
    ) -> dict[str, Any]:
        """RFC 7662 section 2.2: `{"active": false}` for anything not valid right now."""
        now = ctx.now
        token = required(params, "token")
        caller = await self.clients.authenticate(db, creds, confidential_only=True)
        inactive: dict[str, Any] = {"active": False}
        tokens = self.issuer.refresh
        if tokens.well_formed(token):
            # Only the client it was issued to ever holds a refresh token: the live-token rule
            # (store/rotation.py) with the caller as that client.
            live = await live_token_in_session(db, tokens.digest(token), now, caller.client_id)
            if live is None:
                return inactive
            issued_at, expires_at, session_id, scope, client_id, user_id, username = live
            return {
                "active": True,
                "token_type": "refresh_token",
                "scope": scope or self.settings.default_scope,
                "client_id": client_id or "authsvc",
                "username": username,
                "sub": str(user_id),
                "iss": self.settings.issuer,
                "iat": int(issued_at.timestamp()),
                "exp": int(expires_at.timestamp()),
                "sid": str(session_id),
            }
        verified = await self._access_claims(db, token, now)
        if verified is None:
            return inactive
        claims, audience = verified
        # An access token is described to the client it was issued to and to the resource
        # servers it is for (a client whose configured audience is the token's); to any other
        # client it is as good as unknown (RFC 7662 section 4: the server decides who may ask).
        if caller.client_id != claims.client_id and (
            caller.audience is None or caller.audience != audience
        ):
            return inactive
        if is_client_token(claims):
            return await self._describe_client_token(db, claims, audience)
        try:
            principal = await self.access.principal(db, claims, now)
        except InvalidToken:
            return inactive
        bound = {} if claims.jkt is None else {"cnf": {"jkt": claims.jkt}}
        return {
            "active": True,
            # RFC 9449 section 6.2: a bound token's type and key confirmation.
            "token_type": "Bearer" if claims.jkt is None else "DPoP",
            **bound,
            "scope": claims.scope,
            "client_id": claims.client_id,
            "username": principal.username,
            "sub": claims.sub,
            "aud": audience,
            "iss": self.settings.issuer,
            "iat": claims.issued_at,
            "exp": claims.expires_at,
            "jti": claims.jti,
            "sid": claims.sid,
        }

    async def _describe_client_token(
        self, db: AsyncSession, claims: AccessClaims, audience: str
    ) -> dict[str, Any]:
        """A client's own token (client credentials): active while the client is registered
        and the jti is not denied; it names no user and no session."""
        try:
            client_id = await self.access.client(db, claims)
        except InvalidToken:
            return {"active": False}
        return {
            "active": True,
            "token_type": "Bearer",
            "scope": claims.scope,
            "client_id": client_id,
            "sub": client_id,
            "aud": audience,
            "iss": self.settings.issuer,
            "iat": claims.issued_at,
            "exp": claims.expires_at,
            "jti": claims.jti,
        }

    # -- GET /.well-known/oauth-authorization-server -----------------------------------------

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 section 2 and OpenID Connect Discovery 1.0 section 3: one document, served
        at both well-known paths, saying only what the server does."""
        base = self.settings.issuer
        auth_methods = ["client_secret_basic", "client_secret_post", "none"]
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "userinfo_endpoint": f"{base}/oauth/userinfo",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "introspection_endpoint": f"{base}/oauth/introspect",
            "end_session_endpoint": f"{base}/oauth/logout",
            "grant_types_supported": list(self._grants()),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": sorted(self.clients.offered_scopes()),
            "subject_types_supported": ["public"],
            "claims_supported": list(CLAIMS_SUPPORTED),
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "access_token_signing_alg_values_supported": [ALGORITHM],  # RFC 9068 JWTs
            "token_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "introspection_endpoint_auth_methods_supported": auth_methods[:2],
            # RFC 9207: the authorization response carries `iss`.
            "authorization_response_iss_parameter_supported": True,
            # RFC 9449 section 5.1.
            "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),
            # Discovery section 3 defaults this one to true: say that there is no request_uri.
            "request_uri_parameter_supported": False,
            "request_parameter_supported": False,
            "claims_parameter_supported": False,
        }

    # -- helpers -----------------------------------------------------------------------------

    async def _refresh_row(
        self, db: AsyncSession, token: str
    ) -> tuple[RefreshToken, Session, User] | None:
        tokens = self.issuer.refresh
        if not tokens.well_formed(token):
            return None
        return await RefreshTokenRepository(db).by_digest(tokens.digest(token))

    async def _access_claims(
        self, db: AsyncSession, token: str, now: datetime
    ) -> tuple[AccessClaims, str] | None:
        """A valid access token's claims and audience, for our audience or any client's; None
        otherwise."""
        audience = self.issuer.peek_audience(token)
        if audience is None:
            return None
        if audience != self.settings.audience and audience not in (
            await ClientRepository(db).audiences()
        ):
            return None
        try:
            return await self.issuer.verify(db, token, now, audience=audience), audience
        except InvalidToken:
            return None


def required(params: Mapping[str, str], name: str) -> str:
    """A parameter the grant cannot do without (RFC 6749 section 5.2: invalid_request)."""
    value = params.get(name)
    if value is None:
        raise OAuthInvalidRequest(f"The {name} parameter is required.")
    if len(value) > MAX_PARAM:
        raise OAuthInvalidRequest(f"The {name} parameter is too long.")
    return value


def _normal_scope(scope: str | None) -> str | None:
    # RFC 6749 section 3.3: space-delimited, order does not matter.
    return " ".join(dict.fromkeys(scope.split())) if scope else None


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
