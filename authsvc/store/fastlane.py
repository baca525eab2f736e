"""The hot paths on PostgreSQL (refresh, /auth/me): one statement, one round trip, on a small
asyncpg pool.

A refresh through the SQLAlchemy session costs four round trips (BEGIN, read, rotate, COMMIT)
and ~1.2 ms of worker CPU on this machine's 2 cores, more than half a refresh's
(`bench/db_floor.py`). The common case, a live token presented once, needs none of the
session's machinery: a single data-modifying statement checks every condition, spends the token,
touches the session and inserts the successor, atomically, in autocommit (~0.1 ms).

Anything else (unknown token, spent token: grace retry or theft, expired, revoked, another
client's token, a narrowed scope) matches no row here, and the caller takes the full path
(`AuthService._rotate`) in a transaction, which decides what happened. Concurrent presentations
of one token serialise on its row lock exactly as in the full path: the loser's UPDATE re-checks
`used_at IS NULL` after the winner commits, finds it spent, and falls back.

The pool is separate from SQLAlchemy's (it cannot lend its connections to a raw driver call
cheaply: checkout alone cost ~0.18 ms) and small; it opens connections on demand and replaces
any that the server closed. Errors that mean the database is away or slow become
DatabaseUnavailable (503), like the engine's own (errors.py).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

import asyncpg
from sqlalchemy.engine import make_url

from authsvc.store.errors import TRANSIENT_SQLSTATE, DatabaseUnavailable

# $1 digest of the presented token, $2 now, $3 the client it must belong to (NULL: the JSON
# API), $4 the successor's digest, $5 now + refresh TTL (capped at the session's end below).
# Same conditions as AuthService._rotate's full path; same row locks in the same order (the
# token row, then the session row), so it cannot deadlock against it.
ROTATE_SQL: Final = """
WITH spent AS (
    UPDATE refresh_tokens AS t
       SET used_at = $2
      FROM sessions AS s, users AS u
     WHERE t.digest = $1
       AND t.used_at IS NULL
       AND t.expires_at > $2
       AND s.id = t.session_id
       AND s.revoked_at IS NULL
       AND s.expires_at > $2
       AND s.client_id IS NOT DISTINCT FROM $3::varchar
       AND u.id = s.user_id
       AND u.is_active
 RETURNING t.id, t.session_id, s.expires_at AS session_expires_at, s.scope, s.client_id,
           u.id AS user_id, u.roles::text AS roles
), touched AS (
    UPDATE sessions SET last_used_at = $2 WHERE id = (SELECT session_id FROM spent)
), child AS (
    INSERT INTO refresh_tokens (session_id, parent_id, digest, issued_at, expires_at)
    SELECT session_id, id, $4, $2, LEAST($5::timestamptz, session_expires_at) FROM spent
    RETURNING expires_at
)
SELECT spent.session_id, spent.user_id, spent.roles, spent.scope, spent.client_id,
       child.expires_at
  FROM spent, child
"""


# /auth/me: the user of a live session of theirs, if the jti is not denied. $1 session id, $2
# user id (the token's sub), $3 jti, $4 now. The same conditions as
# repositories._access_conditions.
ACCESS_USER_SQL: Final = """
SELECT u.id, u.username, u.roles::text
  FROM sessions AS s JOIN users AS u ON u.id = s.user_id
 WHERE s.id = $1
   AND s.user_id = $2
   AND s.revoked_at IS NULL
   AND s.expires_at > $4
   AND u.is_active
   AND NOT EXISTS (SELECT 1 FROM denied_access_tokens AS d WHERE d.jti = $3)
"""


@dataclass(frozen=True, slots=True)
class AccessUser:
    id: uuid.UUID
    username: str
    roles: list[str]


@dataclass(frozen=True, slots=True)
class FreshRotation:
    """What a successful one-statement rotation leaves the caller to sign."""

    session_id: uuid.UUID
    user_id: uuid.UUID
    roles: list[str]
    scope: str | None
    client_id: str | None
    expires_at: datetime  # the successor's


class RefreshLane(Protocol):
    """A live token's rotation in one step: FastLane here, SQLiteLane (sqlitelane.py)."""

    async def rotate(
        self,
        digest: bytes,
        successor_digest: bytes,
        now: datetime,
        client_id: str | None,
        max_expires_at: datetime,
    ) -> FreshRotation | None: ...


async def _nothing_to_reset(_connection: asyncpg.Connection) -> None:
    """The pool's default reset on release is a round trip (advisory unlocks, CLOSE ALL,
    UNLISTEN, RESET ALL), 6% of a refresh in the profile. These connections only ever run
    the statements above, autocommitted: no session state to undo. (asyncpg still rolls back an open
    transaction, and drops a connection that failed, before calling this.)"""


class FastLane:
    def __init__(
        self, url: str, *, pool_size: int, timeout: float, server_settings: dict[str, str]
    ) -> None:
        parsed = make_url(url).set(drivername="postgresql")
        self._dsn = parsed.render_as_string(hide_password=False)
        self._pool_size = pool_size
        self._timeout = timeout
        self._server_settings = server_settings
        self._pool: asyncpg.Pool | None = None
        self._in_use = 0  # statements in flight (each holds or awaits one connection)
        self._lock = asyncio.Lock()

    async def _get_pool(self) -> asyncpg.Pool:
        pool = self._pool
        if pool is None:
            async with self._lock:
                if self._pool is None:
                    # min_size=0: nothing is opened until the first refresh, so a worker that
                    # starts while the database is away starts anyway (readyz reports it).
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=0,
                        max_size=self._pool_size,
                        timeout=self._timeout,
                        command_timeout=self._timeout * 2,
                        server_settings=self._server_settings,
                        reset=_nothing_to_reset,
                    )
                pool = self._pool
        return pool

    async def rotate(
        self,
        digest: bytes,
        successor_digest: bytes,
        now: datetime,
        client_id: str | None,
        max_expires_at: datetime,
    ) -> FreshRotation | None:
        """Spend a live token and record its successor in one autocommitted statement; None
        when the token is not a live, unspent one of `client_id` (the caller decides why)."""
        row = await self._fetchrow(
            ROTATE_SQL, digest, now, client_id, successor_digest, max_expires_at
        )
        if row is None:
            return None
        return FreshRotation(
            session_id=row[0],
            user_id=row[1],
            roles=json.loads(row[2]) if row[2] else [],
            scope=row[3],
            client_id=row[4],
            expires_at=row[5],
        )

    async def access_user(
        self, session_id: uuid.UUID, user_id: uuid.UUID, jti: str, now: datetime
    ) -> AccessUser | None:
        """SessionRepository.user_if_access_allowed, in one autocommitted read."""
        row = await self._fetchrow(ACCESS_USER_SQL, session_id, user_id, jti, now)
        if row is None:
            return None
        return AccessUser(id=row[0], username=row[1], roles=json.loads(row[2]) if row[2] else [])

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        try:
            pool = await self._get_pool()
            # A bounded wait only when every connection is taken: the timeout's machinery
            # costs a refresh ~3% (connecting is bounded by the connect timeout anyway), and
            # so does asking the pool (get_idle_size walks every connection); we count.
            timeout = None if self._in_use < self._pool_size else self._timeout
            self._in_use += 1
            try:
                async with pool.acquire(timeout=timeout) as connection:
                    return await connection.fetchrow(sql, *args)
            finally:
                self._in_use -= 1
        except asyncpg.PostgresError as exc:
            if not str(exc.sqlstate or "").startswith(TRANSIENT_SQLSTATE):
                raise
            raise DatabaseUnavailable("fast lane", None, exc) from exc
        except (asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            # Connection lost or refused, or no connection within the timeout.
            raise DatabaseUnavailable("fast lane", None, exc) from exc

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
