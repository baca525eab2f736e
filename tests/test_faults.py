"""The database goes away or slows down: bounded 503s, red readiness, nothing half-written,
and service comes back by itself. Outages are made with a TCP proxy (tests/proxy.py) between
authsvc and the shared PostgreSQL, which is never stopped.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from authsvc.app import create_app
from authsvc.clock import MovableClock
from authsvc.security.authorization_codes import s256
from authsvc.store.models import RefreshToken
from tests import pg
from tests.conftest import PASSWORD, Harness, make_settings
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.anyio, pytest.mark.postgresql]

ISSUER = "https://auth.test"  # tests.conftest.make_settings
REDIRECT = "https://app.example/callback"
TIMEOUT = 1.0  # AUTHSVC_DB_TIMEOUT_SECONDS for these tests
# The bound a client waits: pool/connect timeout + statement timeout + a rollback, with slack
# for a loaded machine.
BOUND = 6 * TIMEOUT + 2


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[TcpProxy]:
    pg.truncate_all(postgres_url, seeded=True)
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
async def harness(
    postgres_url: str, proxy: TcpProxy, tmp_path: Path, clock: MovableClock
) -> AsyncIterator[Harness]:
    proxied = make_url(postgres_url).set(port=proxy.port).render_as_string(hide_password=False)
    settings = make_settings(proxied, tmp_path / "data", db_timeout_seconds=TIMEOUT)
    app = create_app(settings, clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        # The issuer's origin: the hosted sign-in's cookies are Secure and __Host- prefixed.
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
            yield Harness(client=client, state=app.state.authsvc, clock=clock)


async def _timed(call: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call
    return response, time.monotonic() - started


def _assert_unavailable(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "service_unavailable"
    assert int(response.headers["retry-after"]) >= 1
    assert elapsed < BOUND, elapsed


def _assert_temporarily_unavailable(response: httpx.Response, elapsed: float) -> None:
    """RFC 6749 section 5.2 body with section 4.1.2.1's code, for every /oauth endpoint."""
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "temporarily_unavailable" and body["error_description"]
    assert set(body) == {"error", "error_description"}
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["cache-control"] == "no-store"
    assert elapsed < BOUND, elapsed


async def _make_client(harness: Harness, **options: Any) -> tuple[str, str | None]:
    async with harness.state.database.transaction() as db:
        made = await harness.state.clients.create(
            db, "test app", harness.clock.now(), actor="test", **options
        )
    return made.client.client_id, made.secret


@asynccontextmanager
async def _locked(postgres_url: str, statement: str) -> AsyncIterator[None]:
    """Another client of the database holds a lock (`statement`) and does not let go."""
    import asyncpg

    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    holder = await asyncpg.connect(dsn)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute(statement)
        yield
        await transaction.rollback()
    finally:
        await holder.close()


async def _id_token_hint(harness: Harness, client_id: str, access_token: str) -> str:
    """An ID token of the access token's session, signed with the server's signing key."""
    claims = jwt.decode(access_token, options={"verify_signature": False})
    now = harness.clock.now()
    async with harness.state.database.read() as db:
        signing = (await harness.state.keys.ring_at(db, now)).signing_key(now)
    assert signing is not None
    iat = int(now.timestamp())
    payload = {"iss": ISSUER, "sub": claims["sub"], "aud": client_id, "sid": claims["sid"]}
    return jwt.encode(
        {**payload, "iat": iat, "exp": iat + 300},
        signing.private,
        algorithm="RS256",
        headers={"kid": signing.kid, "typ": "JWT"},
    )


async def _unused_tokens(postgres_url: str) -> int:
    # Read straight from PostgreSQL, around the proxy.
    from authsvc.store.db import Database

    database = Database(postgres_url)
    try:
        async with database.read() as db:
            result = await db.execute(
                select(func.count()).select_from(RefreshToken).where(RefreshToken.used_at.is_(None))
            )
            return int(result.scalar_one())
    finally:
        await database.dispose()


@pytest.mark.parametrize("how", ["reset", "blackhole"])
async def test_database_down_gives_bounded_503_and_service_resumes(
    harness: Harness, proxy: TcpProxy, postgres_url: str, how: str
) -> None:
    await harness.create_user()
    tokens = await harness.login()

    proxy.cut(how)  # type: ignore[arg-type]
    refresh, elapsed = await _timed(harness.refresh(tokens["refresh_token"]))
    _assert_unavailable(refresh, elapsed)
    login, elapsed = await _timed(
        harness.client.post("/auth/login", json={"username": "alice", "password": "x" * 12})
    )
    _assert_unavailable(login, elapsed)
    ready, elapsed = await _timed(harness.client.get("/readyz"))
    assert ready.status_code == 503 and elapsed < BOUND
    assert ready.json()["checks"]["database"].startswith("unavailable")
    assert (await harness.client.get("/healthz")).status_code == 200  # alive, just not ready

    proxy.restore()
    # No restart, no retry by the client beyond the one it would make anyway: the pool
    # invalidated its dead connections when they failed, and opens new ones.
    assert (await harness.client.get("/readyz")).status_code == 200
    again = await harness.refresh(tokens["refresh_token"])
    # The refresh that failed spent nothing: the token still rotates, once.
    assert again.status_code == 200, again.text
    assert await _unused_tokens(postgres_url) == 1


async def test_slow_database_gives_bounded_503_and_nothing_half_written(
    harness: Harness, proxy: TcpProxy, postgres_url: str
) -> None:
    await harness.create_user()
    tokens = await harness.login()
    proxy.slow(3 * TIMEOUT)  # beyond the statement and command timeouts
    refresh, elapsed = await _timed(harness.refresh(tokens["refresh_token"]))
    _assert_unavailable(refresh, elapsed)
    proxy.restore()
    # Whatever the slow request got to do happened whole or not at all (one statement on the
    # fast lane, one transaction on the full path): one live token either way. If it did
    # rotate, the client never saw the successor, and its retry inside the grace window gets it.
    assert await _unused_tokens(postgres_url) == 1
    again = await harness.refresh(tokens["refresh_token"])
    assert again.status_code == 200, again.text
    assert (await harness.refresh(again.json()["refresh_token"])).status_code == 200


async def test_a_stuck_lock_gives_bounded_503_not_500(harness: Harness, postgres_url: str) -> None:
    await harness.create_user()
    tokens = await harness.login()
    async with _locked(postgres_url, "SELECT id FROM refresh_tokens FOR UPDATE"):
        refresh, elapsed = await _timed(harness.refresh(tokens["refresh_token"]))
        _assert_unavailable(refresh, elapsed)
    assert (await harness.refresh(tokens["refresh_token"])).status_code == 200


async def test_oauth_endpoints_answer_an_outage_as_temporarily_unavailable(
    harness: Harness, proxy: TcpProxy
) -> None:
    await harness.create_user()
    client_id, secret = await _make_client(
        harness, confidential=True, grant_types=("password", "refresh_token")
    )
    assert secret is not None
    auth = (client_id, secret)
    form = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    tokens = (await harness.client.post("/oauth/token", data=form, auth=auth)).json()
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    hint = await _id_token_hint(harness, client_id, tokens["access_token"])
    spent = {"token": tokens["refresh_token"]}

    proxy.cut("reset")
    for path, data in [
        ("/oauth/token", refresh),
        ("/oauth/token", form),
        ("/oauth/revoke", spent),
        ("/oauth/introspect", spent),
    ]:
        response, elapsed = await _timed(harness.client.post(path, data=data, auth=auth))
        _assert_temporarily_unavailable(response, elapsed)
    # RP-initiated logout answers with pages, never JSON.
    logout, elapsed = await _timed(
        harness.client.get("/oauth/logout", params={"id_token_hint": hint})
    )
    assert logout.status_code == 503 and elapsed < BOUND
    assert logout.headers["content-type"].startswith("text/html")
    assert int(logout.headers["retry-after"]) >= 1
    # The JSON API keeps its own shape.
    login, elapsed = await _timed(
        harness.client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    )
    _assert_unavailable(login, elapsed)

    proxy.restore()
    again = await harness.client.post("/oauth/token", data=refresh, auth=auth)
    assert again.status_code == 200, again.text


async def test_authorize_answers_an_outage_with_a_page_or_at_the_redirect_uri(
    harness: Harness, proxy: TcpProxy, postgres_url: str
) -> None:
    await harness.create_user()
    client_id, _ = await _make_client(
        harness, grant_types=("authorization_code",), redirect_uris=(REDIRECT,)
    )
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "state": "st-1",
        "code_challenge": s256("v" * 43),
        "code_challenge_method": "S256",
    }
    # The client and its redirect URI cannot be read: nowhere safe to redirect to.
    proxy.cut("reset")
    page, elapsed = await _timed(harness.client.get("/oauth/authorize", params=params))
    assert page.status_code == 503 and elapsed < BOUND
    assert page.headers["content-type"].startswith("text/html") and "location" not in page.headers
    assert int(page.headers["retry-after"]) >= 1 and page.headers["cache-control"] == "no-store"
    proxy.restore()

    page = await harness.client.get("/oauth/authorize", params=params)
    assert page.status_code == 200, page.text
    hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text)
    fields = {unescape(k): unescape(v) for k, v in hidden}
    sign_in = {**fields, "username": "alice", "password": PASSWORD, "action": "login"}
    # Once the redirect URI is known, the client hears of it there (RFC 6749 section 4.1.2.1).
    async with _locked(postgres_url, "LOCK TABLE authorization_codes IN EXCLUSIVE MODE"):
        answer, elapsed = await _timed(harness.client.post("/oauth/authorize", data=sign_in))
    assert answer.status_code == 303 and elapsed < BOUND, answer.text
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["error"] == "temporarily_unavailable"
    assert query["state"] == "st-1" and query["iss"] == ISSUER
