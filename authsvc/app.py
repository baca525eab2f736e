"""create_app(settings): wiring only."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from authsvc import __version__
from authsvc.api import auth, discovery, health, metrics, oauth, revocations, sessions, well_known
from authsvc.api.docs import install_docs
from authsvc.api.http_guard import HttpGuard, StrictJson
from authsvc.api.jwks_edge import JWKSEdge
from authsvc.api.limits import BodySizeLimit
from authsvc.api.state import AppState
from authsvc.clock import Clock, SystemClock
from authsvc.config import Settings, load_settings
from authsvc.errors import install_error_handlers
from authsvc.observability.metrics import Metrics, key_age_seconds
from authsvc.observability.requests import RequestObserver
from authsvc.security.access_tokens import AccessTokens
from authsvc.security.passwords import PasswordHasher
from authsvc.security.refresh_tokens import RefreshTokens
from authsvc.security.secrets import load_secrets
from authsvc.services.auth import AuthService
from authsvc.services.clients import ClientService
from authsvc.services.housekeeping import Housekeeper
from authsvc.services.keys import KeyService
from authsvc.services.oauth import OAuthService
from authsvc.services.ratelimit import RateLimiter
from authsvc.services.sessions import SessionService
from authsvc.services.users import UserService
from authsvc.store.db import Database, upgrade_async

log = logging.getLogger("authsvc")


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
    auth_service = AuthService(
        settings, database, keys, passwords, access, refresh, limiter, metrics
    )
    users = UserService(settings, passwords)
    clients = ClientService(settings, secrets.client_secret_key)
    return AppState(
        settings=settings,
        clock=clock,
        database=database,
        keys=keys,
        auth=auth_service,
        users=users,
        clients=clients,
        oauth=OAuthService(settings, auth_service, clients),
        sessions=SessionService(auth_service, users),
        metrics=metrics,
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


async def start(state: AppState) -> None:
    if state.settings.should_auto_migrate:
        await upgrade_async(state.settings.resolved_database_url)
    async with state.database.transaction() as db:
        await state.keys.ensure_signing_key(db, state.clock.now())


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """A router's routes straight on the app's router (see create_app); its prefix and tags are
    already in each route."""
    app.router.routes.extend(router.routes)


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or load_settings()
    state = build_state(settings, clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await start(state)
        housekeeper = Housekeeper(settings, state.database, state.keys, state.clock)
        housekeeper.start()
        try:
            yield
        finally:
            await housekeeper.stop()
            await state.auth.limiter.close()
            await state.database.dispose()

    app = FastAPI(
        title="authsvc",
        version=__version__,
        summary="Issues RS256 access tokens and rotating refresh tokens.",
        lifespan=lifespan,
        # No trailing-slash redirects: Starlette builds them from the Host header (an open
        # redirect to any host a client names); /auth/me/ is simply not found.
        redirect_slashes=False,
        # The docs pages are added below, only when enabled and with their own CSP.
        docs_url=None,
        redoc_url=None,
    )
    app.state.authsvc = state
    install_error_handlers(app)
    # The hottest routes first (JWKS, then /auth: refresh, me, login), and on the app's own
    # router: routes are matched in order, one regular expression each (the JWKS after the
    # /auth routes cost it ~15% of its time), and an included router is one more routing level
    # (FastAPI 0.165; routing was ~7% of a refresh in process).
    _add_routes(app, well_known.router)
    _add_routes(app, auth.router)
    app.include_router(revocations.router)
    app.include_router(health.router)
    app.include_router(sessions.router)
    app.include_router(oauth.router)
    app.include_router(discovery.router)
    if settings.spa_dir is not None:
        # Development only: the example SPA on the same origin as the API (see README).
        from authsvc.api.spa import SpaFiles

        app.mount("/spa", SpaFiles(directory=settings.spa_dir, html=True), name="spa")
    app.include_router(metrics.router)
    if settings.docs_enabled:
        install_docs(app, app.openapi_url or "/openapi.json")
    # Inside the body limit, which bounds what StrictJson reads.
    app.add_middleware(StrictJson)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    cors_origins = set(settings.cors_origin_list)
    if settings.allowed_origins:
        # Browser mode for SPAs on other allowlisted origins of the same site needs credentialed
        # CORS for exactly those origins (the cookie is SameSite=Strict, so never cross-site).
        cors_origins |= settings.allowed_origin_set
    if cors_origins:
        # An explicit allowlist only; `*` never goes with credentials (checked in Settings).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(cors_origins),
            allow_credentials=settings.cors_allow_credentials or bool(settings.allowed_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-Authsvc-CSRF",
                "X-Authsvc-Token-Transport",
            ],
            max_age=600,
        )
    app.add_middleware(HttpGuard, max_header_bytes=settings.max_header_bytes)
    # Added last, so outermost: it sees every answer, the body-size 413 included.
    app.add_middleware(RequestObserver, metrics=state.metrics, access_log=settings.access_log)
    # Outside everything: plain JWKS requests are answered here with the stack's own answer
    # (see api/jwks_edge.py); all others pass on at the cost of one comparison.
    app.add_middleware(JWKSEdge, state=state, cors=bool(cors_origins))
    return app
