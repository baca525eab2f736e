"""The hot statements use their indexes on PostgreSQL: no sequential scan of a big table.

A database migrated to head is seeded (bench/runner/seed.py, the benchmark's own seeding, at a
size where the planner prefers an index wherever one applies), the short-lived tables it leaves
empty (account links, authorization codes, mfa challenges) are filled here, and all ANALYZEd.
Each hot statement is then run through the store's own code (the rotation, the access check,
the login lookup, a feed page, the prune deletes...) in a transaction that is rolled back, with
every SQL string and parameter set that reaches the driver recorded; each recorded statement
is EXPLAINed with its own parameters. So the plans are those of the statements authsvc runs,
and a lost index, or a statement rewritten so that it can no longer use one, fails here.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from authsvc.store.access import access_user_in_session, access_values
from authsvc.store.account_tokens import AccountTokenRepository
from authsvc.store.admin import UserAdminRepository
from authsvc.store.audit import AuditRepository
from authsvc.store.authorization_codes import AuthorizationCodeRepository
from authsvc.store.db import create_engine, upgrade
from authsvc.store.mfa import MfaChallengeRepository
from authsvc.store.passkeys import PasskeyChallengeRepository
from authsvc.store.repositories import (
    DenylistRepository,
    RefreshTokenRepository,
    SessionRepository,
    UserRepository,
)
from authsvc.store.revocations import RevocationEventRepository, poll_values
from authsvc.store.rotation import live_token_in_session, rotate_in_session, rotation_values
from bench.runner.seed import TABLES, Counts, seed
from tests import pg

pytestmark = [pytest.mark.postgresql, pytest.mark.anyio]

# 5 k users, sessions, denylisted jtis, feed and audit events; 50 k refresh tokens.
SCALE = 0.005
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def seeded_url() -> Iterator[str]:
    admin = pg.admin_url()
    name = f"authsvc_plans_{secrets.token_hex(4)}"
    pg.create_database(admin, name)
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        seed(dsn, "q", Counts.scaled(SCALE), NOW, "not-a-hash")  # ends with VACUUM ANALYZE
        asyncio.run(seed_short_lived(dsn, Counts.scaled(SCALE).users))
        yield url
    finally:
        pg.drop_database(admin, name)


# The short-lived tables the benchmark does not seed: a row per seeded user, expiring a minute
# apart, the older half expired. Parameters: $1 now, $2 the number of rows.
_EXPIRY = "$1::timestamptz + (i - $2::bigint / 2) * interval '1 minute'"
SHORT_LIVED = {
    "account_tokens": f"""INSERT INTO account_tokens (digest, purpose, user_id, email, created_at,
                                                      expires_at)
        SELECT sha256(convert_to('qa' || i, 'UTF8')), 'verify_email', md5('qu' || i)::uuid,
               'qu' || i || '@example.com', $1::timestamptz - interval '3 days', {_EXPIRY}
        FROM generate_series(0, $2::bigint - 1) AS i""",
    "authorization_codes": f"""INSERT INTO authorization_codes (digest, client_id, user_id,
            redirect_uri, scope, auth_time, issued_at, expires_at)
        SELECT sha256(convert_to('qc' || i, 'UTF8')), 'client', md5('qu' || i)::uuid,
               'https://app.example/cb', 'openid', $1::timestamptz - interval '3 days',
               $1::timestamptz - interval '3 days', {_EXPIRY}
        FROM generate_series(0, $2::bigint - 1) AS i""",
    "mfa_challenges": f"""INSERT INTO mfa_challenges (digest, user_id, purpose, created_at,
                                                      expires_at)
        SELECT sha256(convert_to('qm' || i, 'UTF8')), md5('qu' || i)::uuid, 'login',
               $1::timestamptz - interval '3 days', {_EXPIRY}
        FROM generate_series(0, $2::bigint - 1) AS i""",
    "passkey_challenges": f"""INSERT INTO passkey_challenges (digest, purpose, user_id,
                                                          expires_at)
        SELECT sha256(convert_to('qp' || i, 'UTF8')), 'login', NULL, {_EXPIRY}
        FROM generate_series(0, $2::bigint - 1) AS i""",
}
PLANNED_TABLES = (*TABLES, *SHORT_LIVED)


async def seed_short_lived(dsn: str, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for table, sql in SHORT_LIVED.items():
            await conn.execute(sql, NOW, rows)
            await conn.execute(f"VACUUM (ANALYZE) {table}")
    finally:
        await conn.close()


@pytest.fixture
async def engine(seeded_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(seeded_url)
    try:
        yield engine
    finally:
        await engine.dispose()


Statement = tuple[str, Any]


async def recorded(
    engine: AsyncEngine, work: Callable[[AsyncSession], Awaitable[Any]]
) -> list[Statement]:
    """The statements `work` sends to the driver, in a transaction rolled back afterwards."""
    seen: list[Statement] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with AsyncSession(engine) as db:
            await work(db)
            await db.rollback()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    # Transaction control and the feed's advisory lock touch no table.
    return [(s, p) for s, p in seen if not s.lstrip().upper().startswith(("BEGIN", "SELECT PG_"))]


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def seq_scans(engine: AsyncEngine, statements: list[Statement]) -> list[str]:
    """'table: statement' for every sequential scan of a seeded table in these plans."""
    found = []
    async with engine.connect() as conn:
        for statement, parameters in statements:
            result = await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters)
            raw = result.scalar_one()
            plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
            for node in _nodes(plan):
                table = node.get("Relation Name")
                if node["Node Type"] == "Seq Scan" and table in PLANNED_TABLES:
                    found.append(f"{table}: {' '.join(statement.split())[:300]}")
        await conn.rollback()
    return found


def seeded_uuid(kind: str, i: int) -> uuid.UUID:
    """A seeded row's uuid (seed.py: md5('<tag><kind>' || i)::uuid)."""
    import hashlib

    return uuid.UUID(hashlib.md5(f"q{kind}{i}".encode()).hexdigest())


def seeded_digest(j: int) -> bytes:
    import hashlib

    return hashlib.sha256(f"qt{j}".encode()).digest()


async def assert_indexed(
    engine: AsyncEngine, work: Callable[[AsyncSession], Awaitable[Any]]
) -> None:
    statements = await recorded(engine, work)
    assert statements, "nothing was executed"
    scans = await seq_scans(engine, statements)
    assert scans == [], "\n".join(scans)


# A live session's token: the last of a young session's chain (seed.py: sessions opened
# i % 40 days ago, chains of 10).
LIVE_SESSION = 41
LIVE_TOKEN = LIVE_SESSION * 10 + 9


async def test_refresh_rotation_and_its_reads_use_indexes(engine: AsyncEngine) -> None:
    async def work(db: AsyncSession) -> None:
        values = rotation_values(
            seeded_digest(LIVE_TOKEN),
            secrets.token_bytes(32),
            NOW,
            None,
            NOW + timedelta(days=14),
            None,
        )
        assert await rotate_in_session(db, values) is not None
        tokens = RefreshTokenRepository(db)
        assert await tokens.in_force(seeded_digest(LIVE_TOKEN), NOW, None, None) is not None
        await live_token_in_session(db, seeded_digest(LIVE_TOKEN), NOW, None)
        await tokens.child_of(12345)

    await assert_indexed(engine, work)


async def test_access_check_uses_indexes(engine: AsyncEngine) -> None:
    async def work(db: AsyncSession) -> None:
        user = seeded_uuid("u", LIVE_SESSION)  # session i belongs to user i (i < users)
        values = access_values(seeded_uuid("s", LIVE_SESSION), user, "some-jti", NOW)
        assert await access_user_in_session(db, values) is not None

    await assert_indexed(engine, work)


async def test_login_lookup_and_session_reads_use_indexes(engine: AsyncEngine) -> None:
    async def work(db: AsyncSession) -> None:
        assert await UserRepository(db).by_username("quser4321") is not None
        sessions = SessionRepository(db)
        await sessions.live_ids_for_user(seeded_uuid("u", 4321), NOW)
        await sessions.live(seeded_uuid("s", LIVE_SESSION), NOW)
        await sessions.revoke(
            [seeded_uuid("s", LIVE_SESSION)], NOW, "logout", tokens_valid_until=NOW
        )
        await DenylistRepository(db).add("qjti-new", None, NOW + timedelta(minutes=5), NOW)

    await assert_indexed(engine, work)


async def test_feed_pages_use_the_primary_key(engine: AsyncEngine) -> None:
    async def work(db: AsyncSession) -> None:
        feed = RevocationEventRepository(db)
        # A poller with no cursor starts at the first live event, through the expiry index.
        first = (await feed.poll(poll_values(0, 1000, NOW))).page
        assert first.events and first.events[0].expires_at > NOW
        await feed.poll(poll_values(first.last_id or 0, 1000, NOW))
        # One far behind reads an old range of the primary key.
        await feed.poll(poll_values(10, 1000, NOW - timedelta(days=400)))

    await assert_indexed(engine, work)


async def test_prune_deletes_use_indexes(engine: AsyncEngine) -> None:
    async def work(db: AsyncSession) -> None:
        assert await RefreshTokenRepository(db).delete_expired(NOW, 1000) == 1000
        assert await SessionRepository(db).delete_expired(NOW, 1000) == 1000
        assert await DenylistRepository(db).delete_expired(NOW, 1000) == 1000
        assert await RevocationEventRepository(db).delete_expired(NOW, 1000) == 1000
        assert await AuditRepository(db).delete_older_than(NOW - timedelta(days=365), 100) == 100
        # No seeded user is a pending sign-up: the index must still find that out alone.
        assert await AccountTokenRepository(db).delete_unverified_signups(NOW, 1000) == []
        assert await AccountTokenRepository(db).delete_expired(NOW, 1000) == 1000
        assert await AuthorizationCodeRepository(db).delete_expired(NOW, 1000) == 1000
        assert await MfaChallengeRepository(db).delete_expired(NOW, 1000) == 1000
        assert await PasskeyChallengeRepository(db).delete_expired(NOW, 1000) == 1000

    await assert_indexed(engine, work)


async def test_audit_trail_by_user_uses_indexes(engine: AsyncEngine) -> None:
    """`authsvc audit --user` and `GET /admin/audit?user=` match the user's id or recorded
    name (services/admin.py), newest first, paged by (at, id); for a deleted user the id is
    the one last recorded under the name."""

    async def work(db: AsyncSession) -> None:
        audit = AuditRepository(db)
        user, name = seeded_uuid("u", 4321), "quser4321"
        assert await UserAdminRepository(db).recorded_user_id(name) == user
        await audit.find(user_id=user, limit=101)
        await audit.find(username="quser-never", limit=101)
        first = await audit.find(user_id=user, username=name, limit=101)
        assert first and all(e.username == name for e in first)
        last = first[-1]
        await audit.find(user_id=user, username=name, before=(last.at, last.id), limit=101)
        await audit.find(
            user_id=user, username=name, event="logout", since=NOW - timedelta(days=7), limit=101
        )

    await assert_indexed(engine, work)


async def test_every_foreign_key_is_indexed(engine: AsyncEngine) -> None:
    """A delete of a referenced row (a pruned session) checks or cascades into the referencing
    table by its foreign key: without an index, one scan of that table per deleted row."""
    query = text(
        """SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c
        WHERE c.contype = 'f' AND NOT EXISTS (
            SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid
            AND (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] = c.conkey)"""
    )
    async with engine.connect() as conn:
        unindexed = (await conn.execute(query)).all()
    assert [tuple(row) for row in unindexed] == []
