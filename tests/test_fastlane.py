"""The rotation statement (store/rotation.py) on both databases and on both of its paths: the
lane (asyncpg on PostgreSQL, the lane's own thread on SQLite) and the request's session. It
leaves the same rows either way, and declines every token that is not live, writing nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import func, select, text, update

from authsvc.store.access import access_user_in_session, access_values
from authsvc.store.models import DeniedAccessToken, RefreshToken, Session, User
from authsvc.store.rotation import FreshRotation, RefreshLane, rotate_in_session, rotation_values
from tests.conftest import Harness

pytestmark = pytest.mark.anyio


async def _rows(harness: Harness, sid: uuid.UUID) -> tuple[Session, list[RefreshToken]]:
    async with harness.state.database.read() as db:
        session = await db.get(Session, sid)
        tokens = (
            await db.execute(
                select(RefreshToken).where(RefreshToken.session_id == sid).order_by(RefreshToken.id)
            )
        ).scalars()
        assert session is not None
        return session, list(tokens)


def _sid(body: dict[str, Any]) -> uuid.UUID:
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    return uuid.UUID(claims["sid"])


@pytest.mark.parametrize(
    "settings_overrides", [{"session_max_age": 3600, "refresh_token_ttl": 1800}]
)
async def test_a_rotation_leaves_the_same_rows_on_either_path(harness: Harness) -> None:
    # Each backend's lane, same assertions for both.
    await harness.create_user(roles=["admin"])
    first = await harness.login()
    sid = _sid(first)
    for _ in range(2):  # the second rotation's expiry is capped by the session's end
        harness.clock.advance(1000)
        now = harness.clock.now()
        response = await harness.refresh(first["refresh_token"])
        assert response.status_code == 200, response.text
        second = response.json()
        session, tokens = await _rows(harness, sid)
        parent, child = tokens[-2], tokens[-1]
        assert parent.used_at == now
        assert child.parent_id == parent.id and child.used_at is None
        assert child.issued_at == now
        assert child.expires_at == min(now + timedelta(seconds=1800), session.expires_at)
        assert child.digest == harness.state.issuer.refresh.digest(second["refresh_token"])
        assert session.last_used_at == now
        assert second["refresh_expires_in"] == int((child.expires_at - now).total_seconds())
        claims = jwt.decode(second["access_token"], options={"verify_signature": False})
        assert claims["roles"] == ["admin"] and _sid(second) == sid
        first = second


def _lane(harness: Harness) -> RefreshLane:
    lane = harness.state.database.refresh_lane
    assert lane is not None
    return lane


PATHS = ["lane", "session"]


async def _rotate(harness: Harness, path: str, *args: Any) -> FreshRotation | None:
    digest, successor, now, client_id, expires_at = args
    values = rotation_values(digest, successor, now, client_id, expires_at, None)
    if path == "lane":
        return await _lane(harness).rotate(values)
    async with harness.state.database.transaction() as db:
        return await rotate_in_session(db, values)


# Each value as SQLite stores it: its storage class and its text (hex for a BLOB).
_STORED = """
SELECT {columns} FROM refresh_tokens AS t JOIN sessions AS s ON s.id = t.session_id
 WHERE t.session_id = :sid ORDER BY t.id
"""
_STORED_COLUMNS = (
    "t.session_id",
    "t.parent_id",
    "t.digest",
    "t.issued_at",
    "t.expires_at",
    "t.used_at",
    "s.last_used_at",
)


async def _stored(harness: Harness, sid: uuid.UUID) -> list[tuple[Any, ...]]:
    columns = ", ".join(f"typeof({c}), quote({c})" for c in _STORED_COLUMNS)
    async with harness.state.database.read() as db:
        result = await db.execute(text(_STORED.format(columns=columns)), {"sid": sid.hex})
        return [tuple(row) for row in result]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_sqlite_lane_stores_values_as_the_session_does(harness: Harness) -> None:
    # Two sessions rotated at the same instant, one on the lane and one in the request's
    # session: the same stored values, byte for byte, but for the ids and digests that differ
    # anyway.
    await harness.create_user(roles=["admin"])
    on_lane, on_full_path = await harness.login(), await harness.login()
    harness.clock.advance(1000.123456)  # microseconds too
    database = harness.state.database
    assert (await harness.refresh(on_lane["refresh_token"])).status_code == 200
    lane, database.refresh_lane = database.refresh_lane, None
    try:
        assert (await harness.refresh(on_full_path["refresh_token"])).status_code == 200
    finally:
        database.refresh_lane = lane
    stored_a = await _stored(harness, _sid(on_lane))
    stored_b = await _stored(harness, _sid(on_full_path))
    assert len(stored_a) == len(stored_b) == 2
    for row_a, row_b in zip(stored_a, stored_b, strict=True):
        for i, column in enumerate(_STORED_COLUMNS):
            kind_a, value_a = row_a[2 * i : 2 * i + 2]
            kind_b, value_b = row_b[2 * i : 2 * i + 2]
            assert kind_a == kind_b, column
            if column in ("t.session_id", "t.parent_id", "t.digest"):
                assert len(str(value_a)) == len(str(value_b)), column
            else:
                assert value_a == value_b, column


async def _count(harness: Harness) -> int:
    async with harness.state.database.read() as db:
        return int((await db.execute(select(func.count()).select_from(RefreshToken))).scalar_one())


@pytest.mark.parametrize("path", PATHS)
async def test_the_statement_rotates_a_live_token_once(harness: Harness, path: str) -> None:
    await harness.create_user(roles=["ops"])
    token = (await harness.login())["refresh_token"]
    tokens = harness.state.issuer.refresh
    now = harness.clock.now()
    later = now + timedelta(days=1)
    args = (tokens.digest(token), b"s" * 32, now, None, later)
    fresh = await _rotate(harness, path, *args)
    assert fresh is not None
    assert fresh.roles == ["ops"] and fresh.client_id is None and fresh.expires_at == later
    assert await _rotate(harness, path, *args) is None  # spent: the caller decides why
    assert await _count(harness) == 2


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "case", ["unknown", "other_client", "expired", "session_ended", "revoked", "disabled"]
)
async def test_the_statement_declines_and_writes_nothing(
    harness: Harness, case: str, path: str
) -> None:
    await harness.create_user()
    token = (await harness.login())["refresh_token"]
    digest = harness.state.issuer.refresh.digest(token)
    now: datetime = harness.clock.now()
    client_id: str | None = None
    if case == "unknown":
        digest = bytes(32)
    elif case == "other_client":
        client_id = "some-client"
    elif case == "expired":
        now += timedelta(days=15)
    async with harness.state.database.transaction() as db:
        if case == "session_ended":
            await db.execute(update(Session).values(expires_at=now))
        elif case == "revoked":
            await db.execute(update(Session).values(revoked_at=now))
        elif case == "disabled":
            await db.execute(update(User).values(is_active=False))
    before = await _count(harness)
    assert await _rotate(harness, path, digest, b"s" * 32, now, client_id, now) is None
    assert await _count(harness) == before
    async with harness.state.database.read() as db:
        used = (await db.execute(select(RefreshToken.used_at))).scalars().all()
    assert used == [None]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "case", ["live", "other_user", "denied", "session_ended", "revoked", "disabled"]
)
async def test_the_access_statement_is_the_access_check(
    harness: Harness, case: str, path: str
) -> None:
    # store/access.py: on the PostgreSQL fast lane and in a session, on both databases.
    lane = harness.state.database.fast_lane
    if path == "lane" and lane is None:
        pytest.skip("the access check has a lane on PostgreSQL only")

    user_id = uuid.UUID(await harness.create_user(roles=["ops"]))
    claims = jwt.decode(
        (await harness.login())["access_token"], options={"verify_signature": False}
    )
    sid, jti = uuid.UUID(claims["sid"]), claims["jti"]
    now = harness.clock.now()
    subject = uuid.uuid4() if case == "other_user" else user_id
    async with harness.state.database.transaction() as db:
        if case == "denied":
            db.add(DeniedAccessToken(jti=jti, session_id=sid, expires_at=now, created_at=now))
        elif case == "session_ended":
            await db.execute(update(Session).values(expires_at=now))
        elif case == "revoked":
            await db.execute(update(Session).values(revoked_at=now))
        elif case == "disabled":
            await db.execute(update(User).values(is_active=False))
    values = access_values(sid, subject, jti, now)
    if lane is not None and path == "lane":
        found = await lane.access_user(values)
    else:
        async with harness.state.database.read() as db:
            found = await access_user_in_session(db, values)
    if case == "live":
        assert found is not None
        assert (found.id, found.username, found.roles) == (user_id, "alice", ["ops"])
    else:
        assert found is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_sqlite_lane_rolls_back_and_frees_the_writer_lock_on_an_error(
    harness: Harness,
) -> None:
    await harness.create_user()
    token = (await harness.login())["refresh_token"]
    digest = harness.state.issuer.refresh.digest(token)
    now = harness.clock.now()
    later = now + timedelta(seconds=5)
    # A successor digest that is already taken fails the INSERT, after the UPDATEs.
    with pytest.raises(sqlite3.IntegrityError):
        await _lane(harness).rotate(
            rotation_values(digest, digest, later, None, later + timedelta(days=1), None)
        )
    async with harness.state.database.read() as db:
        session = (await db.execute(select(Session))).scalar_one()
        used = (await db.execute(select(RefreshToken.used_at))).scalars().all()
    assert used == [None] and session.last_used_at == now
    # The lock went back (once: a second release would raise): the next writers go through.
    for _ in range(2):
        harness.clock.advance(1)
        response = await asyncio.wait_for(harness.refresh(token), 10)
        assert response.status_code == 200, response.text
        token = response.json()["refresh_token"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("settings_overrides", [{"db_pool_size": 2}])
async def test_feed_polls_leave_the_lane_room_for_access_checks(
    harness: Harness, database_url: str
) -> None:
    # Polls stuck behind a lock on the feed's table (the database slow for them alone) hold at
    # most half the lane's connections: an access check still gets one at once.
    import asyncpg
    from sqlalchemy.engine import make_url

    await harness.create_user()
    token = (await harness.login())["access_token"]
    me = {"Authorization": f"Bearer {token}"}
    assert (await harness.client.get("/auth/me", headers=me)).status_code == 200
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    locker = await asyncpg.connect(dsn)
    try:
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE revocation_events IN ACCESS EXCLUSIVE MODE")
        polls = [asyncio.create_task(harness.client.get("/auth/revocations")) for _ in range(4)]
        for _ in range(3000):  # until a poll waits on the lock (30 s on a busy machine)
            waiting = await locker.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND application_name = 'authsvc' AND datname = current_database()"
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting == 1  # one poll slot of the two connections
        assert (await harness.client.get("/auth/me", headers=me)).status_code == 200
        await lock.rollback()
        assert [(await p).status_code for p in polls] == [200] * 4
    finally:
        await locker.close()
