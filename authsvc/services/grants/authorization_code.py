"""The authorization_code grant (RFC 6749 section 4.1.3, RFC 7636 section 4.6, OAuth 2.1
section 4.1.3): exchange a one-time code for the normal token pair, and an ID token when the
code was issued for `openid`."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import AuthorizationCodeReused, InvalidGrant
from authsvc.security.authorization_codes import AuthorizationCodes, verifier_matches
from authsvc.security.id_tokens import IdTokenClaims
from authsvc.services import audit
from authsvc.services.clients import ClientService
from authsvc.services.context import RequestContext
from authsvc.services.id_tokens import IdTokenService
from authsvc.services.issuer import TokenPair, session_amr
from authsvc.services.oauth import required
from authsvc.services.signin import SignInService
from authsvc.store.authorization_codes import AuthorizationCodeRepository
from authsvc.store.models import OAuthClient
from authsvc.store.repositories import SessionRepository, UserRepository


class AuthorizationCodeGrant:
    def __init__(
        self,
        settings: Settings,
        clients: ClientService,
        signin: SignInService,
        codes: AuthorizationCodes,
        id_tokens: IdTokenService,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.signin = signin
        self.codes = codes
        self.id_tokens = id_tokens

    async def __call__(
        self,
        db: AsyncSession,
        client: OAuthClient,
        params: Mapping[str, str],
        ctx: RequestContext,
    ) -> TokenPair:
        """Check what the code is bound to, then spend it (compare-and-set, so exactly one of
        two concurrent exchanges wins). A failed check writes nothing: a verifier cannot be
        guessed (at least 256 bits), and a client presenting a stolen code must not be able to
        burn it for its owner."""
        code = required(params, "code")
        redirect_uri = required(params, "redirect_uri")
        verifier = params.get("code_verifier")
        now = ctx.now
        if not self.codes.well_formed(code):
            raise InvalidGrant()
        digest = self.codes.digest(code)
        repo = AuthorizationCodeRepository(db)
        row = await repo.live(digest, client.client_id, now)
        if row is None:
            raise await self._declined(db, digest, ctx)
        # Section 4.1.3: the redirect_uri of the authorization request, character for character.
        if row.redirect_uri != redirect_uri:
            raise InvalidGrant()
        if row.code_challenge is None:
            # OAuth 2.1 section 4.1.3: a verifier for a code issued without a challenge is
            # refused (a downgrade attempt), not ignored.
            if verifier is not None:
                raise InvalidGrant()
        elif verifier is None or not verifier_matches(verifier, row.code_challenge):
            raise InvalidGrant()
        user = await UserRepository(db).by_id(row.user_id)
        if user is None or not user.is_active:
            raise InvalidGrant()
        if not await repo.spend(row.id, now):
            # Spent by a concurrent exchange since it was read: a second presentation.
            raise await self._declined(db, digest, ctx)
        grant = self.clients.grant(client, row.scope, ctx)
        pair = await self.signin.resume(
            db, user, ctx, grant, amr=session_amr(row.amr), auth_time=row.auth_time
        )
        await repo.record_session(row.id, pair.session_id)
        claims = IdTokenClaims(
            subject=str(user.id),
            client_id=client.client_id,
            session_id=str(pair.session_id),
            auth_time=row.auth_time,
            nonce=row.nonce,
            amr=session_amr(row.amr),
        )
        return await self.id_tokens.attach(db, pair, claims, now)

    async def _declined(self, db: AsyncSession, digest: bytes, ctx: RequestContext) -> InvalidGrant:
        """Why the code did not spend. Presented again after it was spent (by any client):
        RFC 6749 section 4.1.2 says refuse and revoke what it issued, so its session is revoked
        and that survives the failed request. Otherwise (unknown, expired, another client's):
        plain invalid_grant, with nothing written."""
        found = await AuthorizationCodeRepository(db).by_digest(digest)
        if found is None or found.used_at is None:
            return InvalidGrant()
        if found.session_id is not None:
            await SessionRepository(db).revoke(
                [found.session_id],
                ctx.now,
                "authorization_code_reused",
                tokens_valid_until=ctx.now + self.settings.access_token_horizon,
            )
        await audit.record(
            db,
            ctx.now,
            audit.Entry(
                audit.AUTHORIZATION_CODE_REUSED,
                found.user_id,
                session_id=found.session_id,
                ip=ctx.ip,
                details={"client_id": found.client_id},
            ),
        )
        return AuthorizationCodeReused()
