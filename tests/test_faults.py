"""The database goes away or slows down: bounded 503s, red readiness, nothing half-written,
and service comes back by itself. Outages are made with a TCP proxy (tests/proxy.py) between
authsvc and the shared PostgreSQL, which is never stopped.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from authsvc.app import create_app
from authsvc.clock import MovableClock
from authsvc.store.models import RefreshToken
from tests import pg
from tests.conftest import Harness, make_settings
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.anyio, pytest.mark.postgresql]

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
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
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
    import asyncpg

    await harness.create_user()
    tokens = await harness.login()
    # Another client of the database holds the token rows locked and does not let go.
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    holder = await asyncpg.connect(dsn)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT id FROM refresh_tokens FOR UPDATE")
        refresh, elapsed = await _timed(harness.refresh(tokens["refresh_token"]))
        _assert_unavailable(refresh, elapsed)
        await transaction.rollback()
    finally:
        await holder.close()
    assert (await harness.refresh(tokens["refresh_token"])).status_code == 200
