"""create_app(settings): wiring only."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from authsvc import __version__
from authsvc.api import (
    accounts,
    admin,
    auth,
    authorize,
    discovery,
    end_session,
    health,
    metrics,
    mfa,
    oauth,
    passkeys,
    revocations,
    sessions,
    userinfo,
    well_known,
)
from authsvc.api.docs import install_docs
from authsvc.api.errors import install_error_handlers
from authsvc.api.http_guard import HttpGuard, StrictJson
from authsvc.api.jwks_edge import JWKSEdge
from authsvc.api.limits import BodySizeLimit
from authsvc.clock import Clock
from authsvc.config import Settings, load_settings
from authsvc.observability import tracing as otel
from authsvc.observability.requests import RequestObserver
from authsvc.services.housekeeping import Housekeeper
from authsvc.state import AppState, build_state
from authsvc.store.db import upgrade_if_behind

log = logging.getLogger("authsvc")


async def start(state: AppState) -> None:
    if state.settings.should_auto_migrate:
        await upgrade_if_behind(state.database)
    # Refuse to start when something stored under the KEK cannot be read with the ring (a
    # previous KEK dropped before `authsvc keys rewrap`), rather than fail request by request.
    async with state.database.read() as db:
        await state.secrets.check(db)
    await state.secrets.load(state.database, state.clock.now())
    async with state.database.transaction() as db:
        await state.keys.ensure_signing_key(db, state.clock.now())


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """A router's routes straight on the app's router (see create_app); its prefix and tags are
    already in each route."""
    app.router.routes.extend(router.routes)


def create_app(
    settings: Settings | None = None, clock: Clock | None = None, tracer_provider: Any = None
) -> FastAPI:
    """The app. `tracer_provider` (an OpenTelemetry TracerProvider) turns tracing on; without
    it tracing is on only when OTEL_EXPORTER_OTLP_ENDPOINT is set (observability/tracing.py)."""
    settings = settings or load_settings()
    state = build_state(settings, clock)
    if tracer_provider is None and otel.configured(os.environ):
        tracer_provider = otel.provider_from_environment()
    tracing: otel.Tracing | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        housekeeper: Housekeeper | None = None
        try:
            # A start that fails (an unreadable key, say) still closes the pool it opened.
            await start(state)
            housekeeper = Housekeeper(settings, state.database, state.keys, state.clock)
            await housekeeper.start()
            state.metrics.start_sampling()
            state.outbox.start()
            yield
        finally:
            await state.outbox.stop()
            if housekeeper is not None:
                await housekeeper.stop()
            await state.metrics.stop_sampling()
            await state.limiter.close()
            await state.dpop.close()
            await state.database.dispose()
            if tracing is not None:
                tracing.close()

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
    if tracer_provider is not None:
        tracing = otel.instrument(app, state.database, tracer_provider)
    install_error_handlers(app)
    # The hottest routes first (JWKS, then /auth: refresh, me, login), and on the app's own
    # router: routes are matched in order, one regular expression each, and an included router
    # is one more routing level on every request.
    _add_routes(app, well_known.router)
    _add_routes(app, auth.router)
    app.include_router(revocations.router)
    app.include_router(health.router)
    app.include_router(sessions.router)
    app.include_router(mfa.router)
    app.include_router(passkeys.router)
    app.include_router(oauth.router)
    app.include_router(userinfo.router)
    app.include_router(end_session.router)
    app.include_router(authorize.router)
    app.include_router(discovery.router)
    app.include_router(admin.router)
    app.include_router(accounts.router)
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
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                # RFC 9449: a browser client sends its proof in this header.
                "DPoP",
                "X-Authsvc-CSRF",
                "X-Authsvc-Token-Transport",
            ],
            # RFC 9449 section 8: the nonce a client must put in its next proof.
            expose_headers=["DPoP-Nonce"],
            max_age=600,
        )
    app.add_middleware(HttpGuard, max_header_bytes=settings.max_header_bytes)
    # Added last, so outermost: it sees every answer, the body-size 413 included.
    app.add_middleware(
        RequestObserver,
        metrics=state.metrics,
        access_log=settings.access_log,
        link=tracing.link_request_id if tracing is not None else None,
    )
    # Outside everything: plain JWKS requests are answered here with the stack's own answer
    # (see api/jwks_edge.py); all others pass on at the cost of one comparison.
    app.add_middleware(JWKSEdge, state=state, cors=bool(cors_origins))
    return app
