"""What the app and the CLI hold for their lifetime: every service, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass

from authsvc.clock import Clock, SystemClock
from authsvc.config import Settings
from authsvc.mail.outbox import Outbox
from authsvc.mail.transport import transport_for
from authsvc.observability.metrics import Metrics, key_age_seconds
from authsvc.security.access_tokens import AccessTokens
from authsvc.security.account_tokens import AccountTokens
from authsvc.security.passwords import PasswordHasher
from authsvc.security.refresh_tokens import RefreshTokens
from authsvc.security.secrets import load_secrets
from authsvc.services.access import AccessService
from authsvc.services.account_links import AccountLinks
from authsvc.services.admin import AdminAccess, UserAdmin
from authsvc.services.clients import ClientService
from authsvc.services.issuer import TokenIssuer
from authsvc.services.keys import KeyService
from authsvc.services.login import LoginService
from authsvc.services.logout import LogoutService
from authsvc.services.oauth import OAuthService
from authsvc.services.ratelimit import RateLimiter
from authsvc.services.recovery import PasswordRecovery
from authsvc.services.refresh import RefreshService
from authsvc.services.sessions import SessionService
from authsvc.services.signup import SignupService
from authsvc.services.users import UserService
from authsvc.store.db import Database


@dataclass
class AppState:
    settings: Settings
    clock: Clock
    database: Database
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
    admin: UserAdmin
    admin_access: AdminAccess
    outbox: Outbox
    signup: SignupService
    recovery: PasswordRecovery


def build_state(settings: Settings, clock: Clock | None = None) -> AppState:
    """Everything a request or a CLI command needs, built once from settings."""
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
    refresh = RefreshTokens(secrets.refresh_digest_key, secrets.refresh_successor_key)
    metrics = Metrics()
    clock = clock or SystemClock()
    metrics.watch_state(lambda: _state_gauges(database, keys, clock))
    limiter = RateLimiter.from_settings(settings)
    issuer = TokenIssuer(settings, keys, access, refresh)
    login = LoginService(settings, database, passwords, issuer, limiter, metrics)
    refresher = RefreshService(settings, database, issuer, limiter, metrics)
    checker = AccessService(database, issuer)
    users = UserService(settings, passwords)
    clients = ClientService(settings, secrets.client_secret_key)
    outbox = Outbox(settings, transport_for(settings))
    links = AccountLinks(settings, AccountTokens(secrets.account_token_key), outbox, limiter)
    return AppState(
        settings=settings,
        clock=clock,
        database=database,
        keys=keys,
        limiter=limiter,
        metrics=metrics,
        issuer=issuer,
        login=login,
        refresh=refresher,
        access=checker,
        logout=LogoutService(settings, checker, issuer),
        users=users,
        clients=clients,
        oauth=OAuthService(settings, clients, issuer, login, refresher, checker),
        sessions=SessionService(settings, database, checker, passwords, limiter, users),
        admin=UserAdmin(settings, database, users),
        admin_access=AdminAccess(issuer, checker),
        outbox=outbox,
        signup=SignupService(settings, users, passwords, links, limiter),
        recovery=PasswordRecovery(settings, users, passwords, links, limiter),
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
