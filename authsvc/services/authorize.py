"""The authorization endpoint's rules (RFC 6749 section 4.1.1, RFC 7636, OpenID Connect Core
section 3.1.2): who the request is for, who is signed in, whether consent is needed, and the
one-time code it ends with. The HTTP layer (api/authorize.py) renders pages and redirects.

Order matters (RFC 6749 section 4.1.2.1, RFC 9700 section 4.1): the client and the redirect URI
are checked first and an unknown one is answered with a page, never a redirect; every later
error goes back to the client's redirect URI with `error`, `state` and `iss`.

The sign-in cookie of the hosted page is a session of its own (client BROWSER_CLIENT) holding
one non-rotating token in refresh_tokens: the live-token rule (store/rotation.py) decides
whether it still signs the user in, and every way of revoking sessions (logout, the sessions
API, disabling the user, `authsvc sessions revoke`) ends it. No registered client can present
it: client ids are URL-safe base64, never BROWSER_CLIENT.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import (
    AccessDenied,
    ConsentRequired,
    InvalidAuthorizationTarget,
    LoginRequired,
    OAuthInvalidRequest,
    UnsupportedResponseType,
)
from authsvc.security.authorization_codes import AuthorizationCodes, valid_s256_challenge
from authsvc.services.clients import ClientService
from authsvc.services.context import RequestContext
from authsvc.services.issuer import Grant, TokenIssuer
from authsvc.services.login import LoginService
from authsvc.services.logout import LogoutService
from authsvc.services.mfa import PASSKEY, PASSWORD_ONLY, PURPOSE_AUTHORIZE, Factor, MfaService
from authsvc.services.signin import SignInService
from authsvc.store.authorization_codes import AuthorizationCodeRepository
from authsvc.store.clients import ClientRepository
from authsvc.store.models import AuthorizationCode, OAuthClient, User
from authsvc.store.repositories import SessionRepository
from authsvc.store.rotation import live_token_in_session

BROWSER_CLIENT = "authsvc:login"
CODE_TTL_SECONDS = 60  # RFC 6749 section 4.1.2: "a maximum ... of 10 minutes is RECOMMENDED"
MAX_STATE = 2048
MAX_NONCE = 512
MAX_PARAM = 4096
PROMPTS = frozenset({"none", "login", "consent", "select_account"})
# The authorization request's parameters; the rest are ignored (RFC 6749 section 3.1).
AUTHORIZE_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "prompt",
        "max_age",
        "login_hint",
    }
)


@dataclass(frozen=True)
class AuthorizationParams:
    """The request's known, non-empty parameters, and the names that were sent more than once
    (section 3.1: such a request is refused)."""

    values: dict[str, str]
    repeated: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Target:
    """Where answers may go: a registered client and one of its exact redirect URIs."""

    client: OAuthClient
    redirect_uri: str
    state: str | None


@dataclass(frozen=True)
class AuthorizationRequest:
    target: Target
    scope: str
    nonce: str | None
    code_challenge: str | None
    prompt: frozenset[str]
    max_age: int | None
    params: dict[str, str]  # carried through the login and consent forms


@dataclass(frozen=True)
class SignedIn:
    user_id: uuid.UUID
    username: str
    session_id: uuid.UUID
    auth_time: datetime


@dataclass(frozen=True)
class Outcome:
    """What the page does next: show the login form, ask for the second factor (carrying
    `mfa_token`, and `passkey` when the user may answer with one), show the consent form, or
    redirect back with `code`. `cookie` is a new sign-in cookie value to set, with its
    lifetime."""

    next: Literal["login", "mfa", "consent", "redirect"]
    user: SignedIn | None = None
    code: str | None = None
    cookie: tuple[str, int] | None = None
    mfa_token: str | None = None
    passkey: bool = False


class AuthorizeService:
    def __init__(
        self,
        settings: Settings,
        clients: ClientService,
        login: LoginService,
        signin: SignInService,
        issuer: TokenIssuer,
        codes: AuthorizationCodes,
        mfa: MfaService,
        logout: LogoutService,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.login = login
        self.signin = signin
        self.issuer = issuer
        self.codes = codes
        self.mfa = mfa
        self.logout = logout

    # -- the request -------------------------------------------------------------------------

    async def target(self, db: AsyncSession, params: AuthorizationParams) -> Target:
        """The client and redirect URI, compared exactly with the registered ones (RFC 9700
        section 2.1); InvalidAuthorizationTarget (a page, no redirect) otherwise. The redirect
        URI is required: OpenID Connect requires it, and it keeps the token request's check
        (RFC 6749 section 4.1.3) one comparison."""
        values = params.values
        if params.repeated & {"client_id", "redirect_uri"}:
            raise InvalidAuthorizationTarget()
        client_id = values.get("client_id")
        redirect_uri = values.get("redirect_uri")
        if not client_id or len(client_id) > 64 or not redirect_uri:
            raise InvalidAuthorizationTarget()
        client = await ClientRepository(db).get(client_id)
        if client is None or redirect_uri not in (client.redirect_uris or []):
            raise InvalidAuthorizationTarget()
        state = values.get("state")
        if "state" in params.repeated or (state is not None and len(state) > MAX_STATE):
            state = None  # refused in `request`, and not echoed
        return Target(client, redirect_uri, state)

    def request(self, target: Target, params: AuthorizationParams) -> AuthorizationRequest:
        """The rest of the request; each failure is an OAuthError redirected to the target."""
        values = params.values
        if params.repeated:
            raise OAuthInvalidRequest(f"The {sorted(params.repeated)[0]} parameter is repeated.")
        for name, value in values.items():
            if len(value) > MAX_PARAM:
                raise OAuthInvalidRequest(f"The {name} parameter is too long.")
        state = values.get("state")
        if state is not None and len(state) > MAX_STATE:
            raise OAuthInvalidRequest("The state parameter is too long.")
        response_type = values.get("response_type")
        if response_type is None:
            raise OAuthInvalidRequest("The response_type parameter is required.")
        if response_type != "code":
            raise UnsupportedResponseType()
        client = target.client
        self.clients.check_grant(client, "authorization_code")
        challenge = self._code_challenge(client, values)
        scope = self.clients.grantable_scope(client, values.get("scope"))
        nonce = values.get("nonce")
        if nonce is not None and len(nonce) > MAX_NONCE:
            raise OAuthInvalidRequest("The nonce parameter is too long.")
        prompt = frozenset(values.get("prompt", "").split())
        if not prompt <= PROMPTS or ("none" in prompt and len(prompt) > 1):
            raise OAuthInvalidRequest("The prompt parameter is not valid.")
        max_age = None
        if "max_age" in values:
            if not values["max_age"].isdigit() or len(values["max_age"]) > 9:
                raise OAuthInvalidRequest("The max_age parameter is not valid.")
            max_age = int(values["max_age"])
        carried = {k: v for k, v in values.items() if k in AUTHORIZE_PARAMS}
        return AuthorizationRequest(target, scope, nonce, challenge, prompt, max_age, carried)

    @staticmethod
    def _code_challenge(client: OAuthClient, values: dict[str, str]) -> str | None:
        """RFC 7636 with S256 only (OAuth 2.1 section 4.1.1): required from public clients,
        accepted from confidential ones. `plain`, or a challenge without a method (which RFC
        7636 section 4.3 reads as plain), is refused: no downgrade."""
        challenge = values.get("code_challenge")
        method = values.get("code_challenge_method")
        if challenge is None:
            if method is not None:
                raise OAuthInvalidRequest("code_challenge_method without code_challenge.")
            if not client.is_confidential:
                raise OAuthInvalidRequest("PKCE is required: send code_challenge (S256).")
            return None
        if method != "S256":
            raise OAuthInvalidRequest("Only code_challenge_method=S256 is supported.")
        if not valid_s256_challenge(challenge):
            raise OAuthInvalidRequest("The code_challenge is not an S256 challenge.")
        return challenge

    # -- the steps of the page ---------------------------------------------------------------

    async def begin(
        self,
        db: AsyncSession,
        request: AuthorizationRequest,
        cookie: str | None,
        ctx: RequestContext,
    ) -> Outcome:
        """GET: a signed-in user goes on (unless prompt=login or max_age say otherwise); anyone
        else sees the login form, or with prompt=none gets login_required."""
        user = None
        if "login" not in request.prompt:
            user = await self.signed_in(db, cookie, ctx.now)
        if (
            user is not None
            and request.max_age is not None
            and ctx.now - user.auth_time > timedelta(seconds=request.max_age)
        ):
            user = None
        if user is None:
            if "none" in request.prompt:
                raise LoginRequired()
            return Outcome("login")
        return await self._signed_in(db, request, user, ctx, consented=False)

    async def sign_in(
        self,
        db: AsyncSession,
        request: AuthorizationRequest,
        username: str,
        password: str,
        cookie: str | None,
        ctx: RequestContext,
    ) -> Outcome:
        """POST of the login form: LoginService's password check (its rate limits, backoff and
        generic failure), then a new sign-in session replacing the cookie's old one; for a user
        with a second factor, first the code form (`second_factor`)."""
        user = await self.login.verify(db, username, password, ctx)
        if await self.mfa.enabled(db, user.id):
            token = await self.mfa.challenge(db, user, PURPOSE_AUTHORIZE, ctx)
            passkey = PASSKEY in await self.mfa.methods(db, user)
            return Outcome("mfa", mfa_token=token, passkey=passkey)
        return await self._start(db, request, user, cookie, ctx, PASSWORD_ONLY)

    async def second_factor(
        self,
        db: AsyncSession,
        request: AuthorizationRequest,
        mfa_token: str,
        factor: Factor,
        cookie: str | None,
        ctx: RequestContext,
    ) -> Outcome:
        """POST of the code form: MfaService's check of the answer (a code, a recovery code or
        a passkey assertion) against the mfa_token that the password check issued, then the
        sign-in session, with the methods used."""
        verified = await self.mfa.verify(db, mfa_token, factor, PURPOSE_AUTHORIZE, ctx)
        return await self._start(db, request, verified.user, cookie, ctx, verified.amr)

    async def passkey_options(
        self, db: AsyncSession, mfa_token: str, ctx: RequestContext
    ) -> dict[str, Any]:
        """WebAuthn request options for the code form's passkey button, bound to the page's
        mfa_token; the assertion comes back through `second_factor`."""
        return await self.mfa.passkey_options(db, mfa_token, PURPOSE_AUTHORIZE, ctx)

    async def offers_passkey(self, db: AsyncSession, mfa_token: str, ctx: RequestContext) -> bool:
        """Whether the code form, shown again for this mfa_token, offers the passkey button."""
        return await self.mfa.offers_passkey(db, mfa_token, PURPOSE_AUTHORIZE, ctx)

    async def _start(
        self,
        db: AsyncSession,
        request: AuthorizationRequest,
        user: User,
        cookie: str | None,
        ctx: RequestContext,
        amr: Sequence[str],
    ) -> Outcome:
        old = await self.signed_in(db, cookie, ctx.now)
        if old is not None:
            await self._end(db, old, ctx, "login_replaced")
        lifetime = self.settings.login_session_ttl
        session, token = await self.signin.browser(
            db, user, ctx, Grant(BROWSER_CLIENT, None, None), amr=amr
        )
        signed = SignedIn(user.id, user.username, session.id, ctx.now)
        outcome = await self._signed_in(db, request, signed, ctx, consented=False)
        return Outcome(outcome.next, outcome.user, outcome.code, (token, lifetime))

    async def decide(
        self,
        db: AsyncSession,
        request: AuthorizationRequest,
        cookie: str | None,
        approved: bool,
        ctx: RequestContext,
    ) -> Outcome:
        """POST of the consent form. Nothing is remembered: the next request asks again."""
        user = await self.signed_in(db, cookie, ctx.now)
        if user is None:
            return Outcome("login")
        if not approved:
            raise AccessDenied("The user declined.")
        return await self._signed_in(db, request, user, ctx, consented=True)

    async def sign_out(
        self, db: AsyncSession, cookie: str | None, ctx: RequestContext, reason: str
    ) -> None:
        """End this browser's sign-in as a logout of its session, by the rule every logout
        follows (LogoutService.revoke): the revocation feed hears of it and the audit trail
        records a `logout`. `reason` is what ended it ("logout" for the consent page's
        "Not you?", "end_session" for RP-initiated logout)."""
        user = await self.signed_in(db, cookie, ctx.now)
        if user is not None:
            await self._end(db, user, ctx, reason)

    async def signed_in(
        self, db: AsyncSession, cookie: str | None, now: datetime
    ) -> SignedIn | None:
        """Who the sign-in cookie names, while its session is live and its user active."""
        if not cookie or not self.issuer.refresh.well_formed(cookie):
            return None
        row = await live_token_in_session(
            db, self.issuer.refresh.digest(cookie), now, BROWSER_CLIENT
        )
        if row is None:
            return None
        issued_at, _, session_id, _, _, user_id, username = row
        # The token is never rotated: it was issued when the user signed in.
        return SignedIn(user_id, username, session_id, issued_at)

    async def _signed_in(
        self,
        db: AsyncSession,
        request: AuthorizationRequest,
        user: SignedIn,
        ctx: RequestContext,
        *,
        consented: bool,
    ) -> Outcome:
        client = request.target.client
        needs_consent = not client.first_party or "consent" in request.prompt
        if needs_consent and not consented:
            if "none" in request.prompt:
                raise ConsentRequired()
            return Outcome("consent", user)
        return Outcome("redirect", user, await self._issue_code(db, request, user, ctx.now))

    async def _issue_code(
        self, db: AsyncSession, request: AuthorizationRequest, user: SignedIn, now: datetime
    ) -> str:
        code = self.codes.new()
        # How the user signed in to this browser, passed on to the session the code opens.
        session = await SessionRepository(db).get(user.session_id)
        await AuthorizationCodeRepository(db).add(
            AuthorizationCode(
                digest=self.codes.digest(code),
                client_id=request.target.client.client_id,
                user_id=user.user_id,
                redirect_uri=request.target.redirect_uri,
                code_challenge=request.code_challenge,
                scope=request.scope,
                nonce=request.nonce,
                auth_time=user.auth_time,
                issued_at=now,
                expires_at=now + timedelta(seconds=CODE_TTL_SECONDS),
                amr=session.amr if session is not None else None,
            )
        )
        return code

    async def _end(
        self, db: AsyncSession, user: SignedIn, ctx: RequestContext, reason: str
    ) -> None:
        """End a browser sign-in as a logout of its session on its user's behalf, so the feed
        hears of it and the audit trail records it, with `reason` as what ended it."""
        await self.logout.revoke(
            db,
            ctx,
            user.user_id,
            user.session_id,
            [user.session_id],
            reason,
            "local",
            details={"client_id": BROWSER_CLIENT, "via": reason},
        )
