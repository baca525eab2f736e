"""Seeding a migrated PostgreSQL database with millions of rows, fast (generate_series).

All the seeding SQL is here, one statement per table, so that a schema change means editing one
place. The rows are consistent with the schema the migrations build and with what authsvc
itself writes: every session belongs to a seeded user, every refresh token to a seeded session
(a chain of `chain` tokens per session, each the parent of the next; all spent but the last),
times in the past except the expiries of what is still live.

The shape is a table between two prunes:
- sessions opened over the last 40 days, living 30 days: a quarter expired, 1 in 50 revoked;
- refresh tokens: one a day-ish per session, 14-day expiry capped at the session's end: all but
  the last of each chain spent, about half expired;
- denylisted jtis and revocation-feed events expiring over the last day, the newest few
  minutes' worth still live;
- audit events over the last 400 days: those past a year are prunable.

Ids are explicit, in a range reserved from each table's sequence first, so a seeded chain can
name its parent and a running server's inserts never collide with the seeded rows. `tag` keeps
names, uuids and digests of two seedings of one database apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

# The shape's fixed numbers (see the module doc).
SESSION_SPREAD_DAYS = 40
SESSION_MAX_AGE_DAYS = 30  # authsvc's default session_max_age
REFRESH_TTL_DAYS = 14  # authsvc's default refresh_token_ttl
FEED_SPREAD_SECONDS = 86400
FEED_LIVE_SECONDS = 600
AUDIT_SPREAD_DAYS = 400


@dataclass(frozen=True)
class Counts:
    users: int
    sessions: int
    refresh_tokens: int
    denylist: int
    revocation_events: int
    audit_events: int

    @classmethod
    def scaled(cls, factor: float) -> Counts:
        """The issue's sizes (1 M of each, 10 M refresh tokens) times `factor`."""

        def n(base: int) -> int:
            return max(10, round(base * factor))

        return cls(
            users=n(1_000_000),
            sessions=n(1_000_000),
            refresh_tokens=n(10_000_000),
            denylist=n(1_000_000),
            revocation_events=n(1_000_000),
            audit_events=n(1_000_000),
        )

    @property
    def chain(self) -> int:
        return max(1, self.refresh_tokens // self.sessions)


# The start of session i, as an expression of i (sessions and their tokens both need it).
def _session_start(i: str) -> str:
    return (
        f"(:now - ({i} % {SESSION_SPREAD_DAYS}) * interval '1 day'"
        f" - ({i} % 86400) * interval '1 second')"
    )


def statements(tag: str, c: Counts) -> list[tuple[str, str]]:
    """(table, INSERT ... SELECT) per table, in foreign-key order. Parameters: :now, :hash
    (the users' password hash), and :<table>_base (the first id reserved in that table)."""
    assert tag.isalnum()
    chain = c.chain
    n_tokens = chain * c.sessions
    s_start = _session_start("i")
    t_start = _session_start(f"(j / {chain})")
    # A token's slot in its chain: k = j % chain, the chain spread over the session's age.
    t_step = f"((:now - {t_start}) / {chain})"
    feed_expiry = (
        f"(:now + interval '{FEED_LIVE_SECONDS} seconds' - ({{n}} - 1 - i) * "
        f"interval '{FEED_SPREAD_SECONDS} seconds' / {{n}})"
    )
    return [
        (
            "users",
            f"""INSERT INTO users (id, username, password_hash, roles, is_active, created_at,
                                   updated_at)
            SELECT md5('{tag}u' || i)::uuid, '{tag}user' || i, :hash, '[]'::json, true,
                   :now - interval '400 days', :now - interval '400 days'
            FROM generate_series(0, {c.users - 1}) AS i""",
        ),
        (
            "sessions",
            f"""INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at,
                                      revoked_at, revoked_reason, client_ip, user_agent)
            SELECT md5('{tag}s' || i)::uuid, md5('{tag}u' || (i % {c.users}))::uuid,
                   {s_start}, :now - (i % 86400) * interval '1 second',
                   {s_start} + interval '{SESSION_MAX_AGE_DAYS} days',
                   CASE WHEN i % 50 = 0 THEN least({s_start} + interval '1 hour', :now) END,
                   CASE WHEN i % 50 = 0 THEN 'logout' END,
                   '198.51.100.' || (i % 250), 'authsvc-bench-seed'
            FROM generate_series(0, {c.sessions - 1}) AS i""",
        ),
        (
            "refresh_tokens",
            f"""INSERT INTO refresh_tokens (id, session_id, parent_id, digest, issued_at,
                                            expires_at, used_at)
            SELECT :refresh_tokens_base + j, md5('{tag}s' || (j / {chain}))::uuid,
                   CASE WHEN j % {chain} > 0 THEN :refresh_tokens_base + j - 1 END,
                   sha256(convert_to('{tag}t' || j, 'UTF8')),
                   {t_start} + (j % {chain}) * {t_step},
                   least({t_start} + (j % {chain}) * {t_step}
                             + interval '{REFRESH_TTL_DAYS} days',
                         {t_start} + interval '{SESSION_MAX_AGE_DAYS} days'),
                   CASE WHEN j % {chain} < {chain - 1}
                        THEN {t_start} + (j % {chain} + 1) * {t_step} END
            FROM generate_series(0, {n_tokens - 1}) AS j""",
        ),
        (
            "denied_access_tokens",
            f"""INSERT INTO denied_access_tokens (jti, session_id, expires_at, created_at)
            SELECT md5('{tag}j' || i), md5('{tag}s' || (i % {c.sessions}))::uuid,
                   {feed_expiry.format(n=c.denylist)},
                   {feed_expiry.format(n=c.denylist)} - interval '305 seconds'
            FROM generate_series(0, {c.denylist - 1}) AS i""",
        ),
        (
            "revocation_events",
            f"""INSERT INTO revocation_events (id, kind, value, expires_at, created_at)
            SELECT :revocation_events_base + i,
                   CASE WHEN i % 2 = 0 THEN 'jti' ELSE 'sid' END,
                   CASE WHEN i % 2 = 0 THEN md5('{tag}j' || (i % {c.denylist}))
                        ELSE md5('{tag}s' || (i % {c.sessions}))::uuid::text END,
                   {feed_expiry.format(n=c.revocation_events)},
                   {feed_expiry.format(n=c.revocation_events)} - interval '305 seconds'
            FROM generate_series(0, {c.revocation_events - 1}) AS i""",
        ),
        (
            "audit_events",
            f"""INSERT INTO audit_events (id, at, event, actor, user_id, username, session_id,
                                          ip, details)
            SELECT :audit_events_base + i,
                   :now - ({c.audit_events} - i) * interval '{AUDIT_SPREAD_DAYS} days'
                          / {c.audit_events},
                   'login_succeeded', NULL, md5('{tag}u' || (i % {c.users}))::uuid,
                   '{tag}user' || (i % {c.users}), md5('{tag}s' || (i % {c.sessions}))::uuid,
                   '198.51.100.' || (i % 250), NULL
            FROM generate_series(0, {c.audit_events - 1}) AS i""",
        ),
    ]


# What the foreign keys would have checked row by row, checked once for all rows.
ORPHANS = {
    "sessions' users": "SELECT count(*) FROM sessions s WHERE NOT EXISTS "
    "(SELECT 1 FROM users u WHERE u.id = s.user_id)",
    "refresh tokens' sessions": "SELECT count(*) FROM refresh_tokens t WHERE NOT EXISTS "
    "(SELECT 1 FROM sessions s WHERE s.id = t.session_id)",
}


# Tables whose ids the seeding chooses (a range reserved from the table's sequence).
_SEQUENCED = {"refresh_tokens", "revocation_events", "audit_events"}
TABLES = (
    "users",
    "sessions",
    "refresh_tokens",
    "denied_access_tokens",
    "revocation_events",
    "audit_events",
)


def _positional(sql: str, names: Sequence[str]) -> str:
    for n, name in enumerate(names, 1):
        cast = "timestamptz" if name == "now" else "text" if name == "hash" else "bigint"
        sql = sql.replace(f":{name}", f"${n}::{cast}")
    return sql


# The secondary indexes and unique constraints of the seeded tables (not the primary keys, nor
# any index a foreign key depends on): (table, name, constraint or None, definition).
_SECONDARY = """
SELECT t.relname::text, x.relname::text, c.conname::text,
       coalesce(pg_get_constraintdef(c.oid), pg_get_indexdef(i.indexrelid))
FROM pg_index i
JOIN pg_class x ON x.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
WHERE t.relname = ANY($1::text[]) AND t.relnamespace = 'public'::regnamespace
  AND NOT i.indisprimary
  AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f'
                  AND f.conindid = i.indexrelid)
ORDER BY 1, 2
"""

Index = tuple[str, str, str | None, str]


async def _drop_secondary(conn: asyncpg.Connection) -> list[Index]:
    """Drop the seeded tables' secondary indexes (rebuilt by _rebuild): one sorted build each
    is much faster than millions of random insertions into them."""
    found: list[Index] = [tuple(r) for r in await conn.fetch(_SECONDARY, list(TABLES))]
    for table, index, constraint, _ in found:
        if constraint is not None:
            await conn.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{constraint}"')
        else:
            await conn.execute(f'DROP INDEX "{index}"')
    return found


async def _rebuild(conn: asyncpg.Connection, found: list[Index]) -> None:
    for table, _, constraint, definition in found:
        if constraint is not None:
            await conn.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{constraint}" {definition}')
        else:
            await conn.execute(definition)
    again = [tuple(r) for r in await conn.fetch(_SECONDARY, list(TABLES))]
    if again != found:
        raise RuntimeError(f"indexes not rebuilt as they were: {found} != {again}")


async def _seed(
    dsn: str, tag: str, counts: Counts, now: datetime, password_hash: str, rebuild: bool
) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    timings: dict[str, float] = {}
    try:
        # Bulk load: no need to wait for the WAL flush of each statement, nor for a foreign-key
        # trigger per row (replica mode skips them; the rows are checked below instead).
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("SET maintenance_work_mem = '256MB'")
        sizes = {
            "refresh_tokens": counts.chain * counts.sessions,
            "revocation_events": counts.revocation_events,
            "audit_events": counts.audit_events,
        }
        params: dict[str, object] = {"now": now, "hash": password_hash}
        for table in _SEQUENCED:
            seq = await conn.fetchval("SELECT pg_get_serial_sequence($1, 'id')", table)
            base = await conn.fetchval("SELECT nextval($1::regclass)", seq)
            await conn.execute("SELECT setval($1::regclass, $2)", seq, base + sizes[table])
            params[f"{table}_base"] = base
        dropped = await _drop_secondary(conn) if rebuild else []
        for table, sql in statements(tag, counts):
            names = [name for name in sorted(params, key=len, reverse=True) if f":{name}" in sql]
            started = time.monotonic()
            await conn.execute(_positional(sql, names), *(params[n] for n in names))
            timings[table] = time.monotonic() - started
        await conn.execute("RESET session_replication_role")
        if dropped:
            started = time.monotonic()
            await _rebuild(conn, dropped)
            timings["indexes"] = time.monotonic() - started
        started = time.monotonic()
        for check, sql in ORPHANS.items():
            orphans = await conn.fetchval(sql)
            if orphans:
                raise RuntimeError(f"seeding left {orphans} rows without their {check}")
        timings["foreign-key check"] = time.monotonic() - started
        started = time.monotonic()
        # What autovacuum would have done by the time a table has grown this big: statistics
        # for the planner, and the visibility map for index-only scans.
        for table in TABLES:
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        timings["vacuum analyze"] = time.monotonic() - started
    finally:
        await conn.close()
    return timings


def seed(
    dsn: str,
    tag: str,
    counts: Counts,
    now: datetime,
    password_hash: str,
    *,
    rebuild_indexes: bool = True,
) -> dict[str, float]:
    """Insert `counts` rows into a migrated database; seconds per step. With rebuild_indexes
    (for a database nobody uses meanwhile) the secondary indexes are dropped first and built
    again, the same, afterwards."""
    return asyncio.run(_seed(dsn, tag, counts, now, password_hash, rebuild_indexes))


async def _sizes(dsn: str) -> dict[str, tuple[int, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for table in TABLES:
            rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
            size = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
            out[table] = (int(rows), int(size))
        return out
    finally:
        await conn.close()


def table_sizes(dsn: str) -> dict[str, tuple[int, int]]:
    """Rows and bytes (heap, indexes and TOAST) of each seeded table."""
    return asyncio.run(_sizes(dsn))
