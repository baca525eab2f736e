"""Dependencies: the request's database scope, the clock, the caller's credentials."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.api.client_ip import client_address
from authsvc.config import Settings
from authsvc.errors import AuthError, InvalidRequest, InvalidToken
from authsvc.jose.bearer import DPOP, parse_authorization, parse_bearer
from authsvc.jose.jws import MalformedToken
from authsvc.services.access import AccessCredential
from authsvc.services.context import DPoPRequest, RequestContext
from authsvc.state import AppState
from authsvc.store.db import Database

log = logging.getLogger("authsvc.api")


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.authsvc
    return state


# The dependencies below are `async def` although they never await: FastAPI runs a plain `def`
# dependency in the thread pool, a thread hop per dependency on every request.


async def _state(request: Request) -> AppState:
    return get_state(request)


State = Annotated[AppState, Depends(_state)]


@asynccontextmanager
async def write_scope(database: Database) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed here and only here, before the response is sent.

    An AuthError marked persist_writes (family revocation on refresh reuse) commits what was
    written before it; every other error rolls the request back whole, and then commits only
    the writes that record the failure (exc.failure_writes: the audit row of a failed login).
    The WriteDB dependency; the refresh route enters it directly (see api/auth.py).
    """
    session = database.sessions()
    try:
        yield session
    except AuthError as exc:
        if exc.persist_writes:
            await session.commit()
        else:
            await session.rollback()
            if exc.failure_writes:
                await _write_failure(session, exc)
        raise
    except BaseException:
        await session.rollback()
        raise
    else:
        # A request that never used its session (a refresh on the fast lane, an early 4xx)
        # skips the empty commit and close, which cost CPU even with nothing to commit.
        if session.in_transaction():
            await session.commit()
    finally:
        if session.in_transaction():
            # Only if committing or rolling back failed: give the connection back.
            await session.close()


async def _write_scope(request: Request) -> AsyncIterator[AsyncSession]:
    async with write_scope(get_state(request).database) as session:
        yield session


async def _write_failure(session: AsyncSession, exc: AuthError) -> None:
    try:
        for write in exc.failure_writes:
            await write(session)
        await session.commit()
    except Exception:
        # The request's own answer (e.g. 401) still goes out; losing this row is logged.
        log.exception("could not record the failure of a request")
        await session.rollback()


async def _read_scope(request: Request) -> AsyncIterator[AsyncSession]:
    session = get_state(request).database.readonly_sessions()
    try:
        yield session
    finally:
        # Like write_scope: a session never used (/auth/me on the fast lane) has nothing to
        # close. Closing ends a read transaction and keeps loaded objects readable.
        if session.in_transaction():
            await session.close()


WriteDB = Annotated[AsyncSession, Depends(_write_scope, scope="function")]
ReadDB = Annotated[AsyncSession, Depends(_read_scope, scope="function")]


async def _now(request: Request) -> datetime:
    return get_state(request).clock.now()


Now = Annotated[datetime, Depends(_now)]


def request_context(request: Request, settings: Settings, now: datetime) -> RequestContext:
    """The services' RequestContext: the time, and the client as the proxies we trust say."""
    peer = request.client.host if request.client else None
    return RequestContext(
        now=now,
        ip=client_address(
            peer, request.headers.getlist("x-forwarded-for"), settings.trusted_proxy_networks
        ),
        user_agent=request.headers.get("user-agent"),
    )


async def _context(request: Request) -> RequestContext:
    state = get_state(request)
    return request_context(request, state.settings, state.clock.now())


Context = Annotated[RequestContext, Depends(_context)]


@dataclass(frozen=True, slots=True)
class RouteContext:
    state: AppState
    ctx: RequestContext


def route_context(request: Request) -> RouteContext:
    """State and Context in one plain call, for the hottest routes to take as a single
    dependency: FastAPI resolves each dependency with a recursive call that re-reads every
    parameter source, which adds up on a route as short as refresh."""
    state = get_state(request)
    return RouteContext(state, request_context(request, state.settings, state.clock.now()))


def bearer_token(header: str | None) -> str:
    """The bearer token of an Authorization header; InvalidToken if absent or malformed."""
    try:
        token = parse_bearer(header)
    except MalformedToken:
        raise InvalidToken() from None
    if token is None:
        raise InvalidToken(missing=True)
    return token


def dpop_request(request: Request, settings: Settings) -> DPoPRequest | None:
    """The request's DPoP proof (RFC 9449 section 4.1), unverified, with the request's URI as
    the issuer's base URL names it: the Host header is the client's to pick, so a proof made
    for another server must not match by sending that server's name. None without a proof;
    InvalidRequest for more than one DPoP header (section 4.3 step 1)."""
    proofs = request.headers.getlist("dpop")
    if not proofs:
        return None
    if len(proofs) > 1:
        raise InvalidRequest("Send one DPoP proof.")
    return DPoPRequest(proofs[0], request.method, settings.issuer + request.url.path)


def access_credential(request: Request, settings: Settings) -> AccessCredential:
    """The access token of the Authorization header, `Bearer` or `DPoP` (with its proof);
    InvalidToken if absent or malformed."""
    try:
        parsed = parse_authorization(request.headers.get("authorization"))
    except MalformedToken:
        raise InvalidToken() from None
    if parsed is None:
        raise InvalidToken(missing=True)
    scheme, token = parsed
    proof = dpop_request(request, settings) if scheme == DPOP else None
    return AccessCredential(token, scheme, proof)


async def _bearer(request: Request) -> AccessCredential:
    return access_credential(request, get_state(request).settings)


async def _optional_bearer(request: Request) -> AccessCredential | None:
    if request.headers.get("authorization") is None:
        return None
    return access_credential(request, get_state(request).settings)


async def with_dpop(request: Request, state: AppState, ctx: RequestContext) -> RequestContext:
    """At an endpoint that issues tokens: the context with the request's DPoP proof, if one
    was sent, verified (RFC 9449 section 5) and its key's thumbprint in `dpop_jkt`;
    InvalidDPoPProof (400) for a bad one."""
    proof = dpop_request(request, state.settings)
    if proof is None:
        return ctx
    return replace(ctx, dpop_jkt=await state.dpop.token_key(proof, ctx.now))


async def _token_context(request: Request) -> RequestContext:
    state = get_state(request)
    return await with_dpop(
        request, state, request_context(request, state.settings, state.clock.now())
    )


# Bearer: the caller's access token, under either scheme (the name predates DPoP).
Bearer = Annotated[AccessCredential, Depends(_bearer)]
OptionalBearer = Annotated[AccessCredential | None, Depends(_optional_bearer)]
TokenContext = Annotated[RequestContext, Depends(_token_context)]
