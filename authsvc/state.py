"""What the app and the CLI hold for their lifetime: every service, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from authsvc.clock import Clock, SystemClock
from authsvc.config import Settings
from authsvc.mail.outbox import Outbox
from authsvc.mail.transport import transport_for
from authsvc.observability.metrics import Metrics, key_age_seconds, multiprocess_dir
from authsvc.security.access_tokens import AccessTokens
from authsvc.security.account_tokens import AccountTokens
from authsvc.security.authorization_codes import AuthorizationCodes
from authsvc.security.csrf import CsrfTokens
from authsvc.security.id_tokens import IdTokens
from authsvc.security.mfa import OneTimeSecrets, TotpSecrets
from authsvc.security.passwords import PasswordHasher
from authsvc.security.refresh_tokens import RefreshTokens
from authsvc.security.secrets import load_secrets
from authsvc.services.access import AccessService
from authsvc.services.account_links import AccountLinks
from authsvc.services.admin import AdminAccess, UserAdmin
from authsvc.services.authorize import AuthorizeService
from authsvc.services.clients import ClientService
from authsvc.services.dpop import DPoPService
from authsvc.services.end_session import EndSessionService
from authsvc.services.grants.authorization_code import AuthorizationCodeGrant
from authsvc.services.id_tokens import IdTokenService
from authsvc.services.issuer import TokenIssuer
from authsvc.services.keys import KeyService
from authsvc.services.login import LoginService
from authsvc.services.logout import LogoutService
from authsvc.services.mfa import MfaService
from authsvc.services.oauth import OAuthService
from authsvc.services.passkeys import PasskeyService
from authsvc.services.ratelimit import RateLimiter
from authsvc.services.recovery import PasswordRecovery
from authsvc.services.refresh import RefreshService
from authsvc.services.secrets import SecretService
from authsvc.services.sessions import SessionService
from authsvc.services.signin import SignInService
from authsvc.services.signup import SignupService
from authsvc.services.userinfo import UserInfoService
from authsvc.services.users import UserService
from authsvc.store.db import Database


@dataclass
class AppState:
    settings: Settings
    clock: Clock
    database: Database
    secrets: SecretService
    keys: KeyService
    limiter: RateLimiter
    metrics: Metrics
    issuer: TokenIssuer
    login: LoginService
    refresh: RefreshService
    access: AccessService
    logout: LogoutService
    users: UserService
    clients: ClientService
    oauth: OAuthService
    sessions: SessionService
    userinfo: UserInfoService
    end_session: EndSessionService
    dpop: DPoPService
    admin: UserAdmin
    admin_access: AdminAccess
    authorize: AuthorizeService
    csrf: CsrfTokens
    outbox: Outbox
    signup: SignupService
    recovery: PasswordRecovery
    mfa: MfaService
    passkeys: PasskeyService


def build_state(settings: Settings, clock: Clock | None = None) -> AppState:
    """Everything a request or a CLI command needs, built once from settings. The HMAC keys
    are read from the database by `start` (app.py) or the CLI's open_state, before use."""
    secrets = load_secrets(settings)
    database = Database(
        settings.resolved_database_url,
        pool_size=settings.db_pool_size,
        timeout=settings.db_timeout_seconds,
    )
    keys = KeyService(settings, secrets)
    passwords = PasswordHasher(settings)
    access = AccessTokens(
        issuer=settings.issuer,
        audience=settings.audience,
        ttl=settings.access_token_ttl,
        leeway=settings.token_leeway_seconds,
    )
    refresh = RefreshTokens(secrets)
    metrics = Metrics(multiprocess_dir())
    clock = clock or SystemClock()
    metrics.watch_state(lambda: _state_gauges(database, keys, clock))
    limiter = RateLimiter.from_settings(settings, metrics)
    issuer = TokenIssuer(settings, keys, access, refresh)
    dpop = DPoPService(settings, secrets)
    checker = AccessService(database, issuer, dpop)
    signin = SignInService(settings, issuer)
    passkeys = PasskeyService(settings, checker, signin, limiter, metrics)
    mfa = MfaService(
        settings,
        TotpSecrets(secrets.keks, urlsplit(settings.issuer).hostname or "authsvc"),
        OneTimeSecrets(secrets),
        checker,
        passkeys,
    )
    login = LoginService(database, passwords, signin, limiter, metrics, mfa)
    refresher = RefreshService(settings, database, issuer, limiter, metrics)
    users = UserService(settings, passwords)
    clients = ClientService(settings, secrets)
    logout = LogoutService(settings, checker, issuer)
    codes = AuthorizationCodes(secrets)
    authorize = AuthorizeService(settings, clients, login, signin, issuer, codes, mfa, logout)
    id_tokens = IdTokenService(
        issuer, IdTokens(issuer=settings.issuer, ttl=settings.access_token_ttl)
    )
    code_grant = AuthorizationCodeGrant(settings, clients, signin, codes, id_tokens)
    outbox = Outbox(settings, transport_for(settings))
    links = AccountLinks(settings, AccountTokens(secrets), outbox, limiter)
    return AppState(
        settings=settings,
        clock=clock,
        database=database,
        secrets=SecretService(secrets),
        keys=keys,
        limiter=limiter,
        metrics=metrics,
        issuer=issuer,
        login=login,
        refresh=refresher,
        access=checker,
        logout=logout,
        users=users,
        clients=clients,
        oauth=OAuthService(
            settings, clients, issuer, login, refresher, checker, code_grant, id_tokens
        ),
        sessions=SessionService(settings, database, checker, passwords, limiter, users),
        userinfo=UserInfoService(checker),
        end_session=EndSessionService(settings, issuer, logout, authorize),
        dpop=dpop,
        admin=UserAdmin(settings, database, users),
        admin_access=AdminAccess(issuer, checker),
        authorize=authorize,
        csrf=CsrfTokens(secrets),
        outbox=outbox,
        signup=SignupService(settings, users, passwords, links, limiter),
        recovery=PasswordRecovery(settings, users, passwords, links, limiter),
        mfa=mfa,
        passkeys=passkeys,
    )


def _state_gauges(database: Database, keys: KeyService, clock: Clock) -> dict[str, float | None]:
    now = clock.now()
    active = keys.ring.signing_key(now)
    values: dict[str, float | None] = {
        "authsvc_signing_key_age_seconds": key_age_seconds(
            active.created_at if active else None, now
        )
    }
    values.update(database.pool_usage())
    return values
