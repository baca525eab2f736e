"""The hot paths on PostgreSQL (refresh, /auth/me, the revocation feed's poll): one
statement, one round trip, on a small asyncpg pool of its own.

The SQLAlchemy session adds round trips (BEGIN, COMMIT) and, more than that, worker CPU per
statement; the common cases, a live token rotated once, an access check and a feed poll, need
none of its machinery. The statements are written once elsewhere and compiled here for asyncpg:
the rotation in rotation.py, the access check in access.py, the feed's poll in revocations.py.
A token the rotation declines writes nothing, and the caller classifies it in the request's
transaction.

The pool is separate from SQLAlchemy's because lending the engine's connections to a raw driver
call costs a checkout per request; it opens connections on demand and replaces any that the
server closed. Feed polls may hold at most half of its connections: many resource servers
polling at once would otherwise queue the refreshes and access checks that a person waits on
behind them (bench/inproc_lane_share.py measures it). Errors that mean the database is away
or slow become DatabaseUnavailable (503), like the engine's own (errors.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from authsvc.store.access import AccessUser, access_user, asyncpg_access
from authsvc.store.errors import TRANSIENT_SQLSTATE, DatabaseUnavailable
from authsvc.store.revocations import FeedPoll, asyncpg_poll, feed_poll
from authsvc.store.rotation import FreshRotation, asyncpg_rotation, fresh_rotation


async def _nothing_to_reset(_connection: asyncpg.Connection) -> None:
    """The pool's default reset on release is a round trip (advisory unlocks, CLOSE ALL,
    UNLISTEN, RESET ALL). These connections only ever run autocommitted statements: no session
    state to undo. (asyncpg still rolls back an open transaction, and drops a connection that
    failed, before calling this.)"""


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
        self._poll_slots = asyncio.Semaphore(max(1, pool_size // 2))
        self._lock = asyncio.Lock()
        self._rotation = asyncpg_rotation()
        self._access = asyncpg_access()
        self._poll = asyncpg_poll()

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

    async def rotate(self, values: dict[str, Any]) -> FreshRotation | None:
        """rotation.py's statement, autocommitted: None when the token is not live (nothing
        was written; the caller decides why)."""
        row = await self._fetchrow(self._rotation.sql, *self._rotation.args(values))
        return None if row is None else fresh_rotation(row)

    async def access_user(self, values: dict[str, Any]) -> AccessUser | None:
        """access.py's statement, in one autocommitted read."""
        row = await self._fetchrow(self._access.sql, *self._access.args(values))
        return None if row is None else access_user(row)

    async def feed_poll(self, values: dict[str, Any]) -> FeedPoll:
        """revocations.py's poll statement, in one autocommitted read, in one of the polls'
        slots (half the pool)."""
        slots = self._poll_slots
        if slots.locked():  # a bounded wait only when it may be long, as in _run
            try:
                await asyncio.wait_for(slots.acquire(), self._timeout)
            except TimeoutError as exc:
                raise DatabaseUnavailable("fast lane", None, exc) from exc
        else:
            await slots.acquire()
        try:
            return feed_poll(await self._fetch(self._poll.sql, *self._poll.args(values)))
        finally:
            slots.release()

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        return await self._run(False, sql, *args)

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self._run(True, sql, *args)
        return rows

    async def _run(self, all_rows: bool, sql: str, *args: Any) -> Any:
        try:
            pool = await self._get_pool()
            # A bounded wait only when every connection is taken: the timeout's machinery has
            # a cost on every call (connecting is bounded by the connect timeout anyway), and
            # so does asking the pool (get_idle_size walks every connection); we count.
            timeout = None if self._in_use < self._pool_size else self._timeout
            self._in_use += 1
            try:
                async with pool.acquire(timeout=timeout) as connection:
                    if all_rows:
                        return await connection.fetch(sql, *args)
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
