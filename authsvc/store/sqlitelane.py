"""A live token's rotation on SQLite in one call to the driver's thread.

aiosqlite runs each driver call in the connection's own thread and hands the result back to
the event loop: a refresh through the session is ~20 such hops (BEGIN IMMEDIATE, then cursor,
execute, fetch and close for each statement), all of them while this process's writer lock is
held, so refreshes were bound by that latency (~150-186/s) with the cores half idle. Here the
whole write transaction, BEGIN IMMEDIATE to COMMIT, is one function run in that thread: one
hop under the lock.

Same contract as FastLane.rotate (fastlane.py): the common case only (a live, unspent token of
`client_id`); anything else writes nothing and returns None, and the caller takes the full path,
which decides what happened. Concurrent presentations of one token cannot both match: writers
of this process queue on the same lock as the session's write transactions (db._SQLiteWriter),
those of other processes on SQLite's own write lock (BEGIN IMMEDIATE), and the loser then finds
the token spent.

Values are bound and read through the models' own column types, so the rows are exactly those
the ORM writes (Uuid as 32 hex digits, UTC datetimes as naive strings in SQLAlchemy's format,
digests as BLOBs; tests/test_fastlane.py compares both paths).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.store.errors import DatabaseUnavailable
from authsvc.store.fastlane import FreshRotation
from authsvc.store.models import RefreshToken, Session

# The conditions of FastLane's ROTATE_SQL. `IS` is SQLite's NULL-safe equality. Datetimes
# compare as the fixed-width strings SQLAlchemy stores, as in every query of the full path.
_FIND: Final = """
SELECT t.id, t.session_id, s.expires_at, s.scope, s.client_id, s.user_id, u.roles
  FROM refresh_tokens AS t
  JOIN sessions AS s ON s.id = t.session_id
  JOIN users AS u ON u.id = s.user_id
 WHERE t.digest = :digest
   AND t.used_at IS NULL
   AND t.expires_at > :now
   AND s.revoked_at IS NULL
   AND s.expires_at > :now
   AND s.client_id IS :client_id
   AND u.is_active
"""
_SPEND: Final = "UPDATE refresh_tokens SET used_at = :now WHERE id = :id AND used_at IS NULL"
_TOUCH: Final = "UPDATE sessions SET last_used_at = :now WHERE id = :session_id"
_INSERT: Final = """
INSERT INTO refresh_tokens (session_id, parent_id, digest, issued_at, expires_at)
VALUES (:session_id, :id, :successor, :now, :expires_at)
"""

# What the thread returns: session id, user id, roles, scope, client id, successor's expiry,
# as stored.
_Stored = tuple[str, str, str | None, str | None, str | None, str]


def _rotate(db: sqlite3.Connection, params: dict[str, Any]) -> _Stored | None:
    """Runs in the aiosqlite connection's thread. The connection is in autocommit
    (isolation_level None, db._configure_sqlite): the transaction is the statements'."""
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute(_FIND, params).fetchone()
        if row is None:
            db.execute("ROLLBACK")
            return None
        token_id, session_id, session_expires_at, scope, client_id, user_id, roles = row
        params["id"], params["session_id"] = token_id, session_id
        # Both sides are in SQLAlchemy's fixed-width format: the string order is the time's.
        params["expires_at"] = min(params["expires_at"], session_expires_at)
        # Cannot miss: the row was just read under the write lock.
        db.execute(_SPEND, params)
        db.execute(_TOUCH, params)
        db.execute(_INSERT, params)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return session_id, user_id, roles, scope, client_id, params["expires_at"]


class SQLiteLane:
    def __init__(
        self, engine: AsyncEngine, writer: Callable[[], AbstractAsyncContextManager[None]]
    ) -> None:
        self._engine = engine
        self._writer = writer
        dialect = engine.dialect
        tokens, sessions = RefreshToken.__table__.c, Session.__table__.c
        # dialect_impl: the processors SQLAlchemy itself applies on SQLite (a type's own
        # bind_processor is the generic one, which converts nothing).
        time, digest = (c.type.dialect_impl(dialect) for c in (tokens.issued_at, tokens.digest))
        uuid_type = sessions.id.type.dialect_impl(dialect)
        self._bind_time = _processor(time.bind_processor(dialect))
        self._bind_digest = _processor(digest.bind_processor(dialect))
        self._read_time = _processor(time.result_processor(dialect, None))
        self._read_uuid = _processor(uuid_type.result_processor(dialect, None))

    async def rotate(
        self,
        digest: bytes,
        successor_digest: bytes,
        now: datetime,
        client_id: str | None,
        max_expires_at: datetime,
    ) -> FreshRotation | None:
        """FastLane.rotate on SQLite: None, having written nothing, unless the token is a live,
        unspent one of `client_id`."""
        params: dict[str, Any] = {
            "digest": self._bind_digest(digest),
            "now": self._bind_time(now),
            "client_id": client_id,
            "successor": self._bind_digest(successor_digest),
            "expires_at": self._bind_time(max_expires_at),
        }
        # The connection first, then the writer lock: the order of the session's write
        # transactions (checkout, then the lock at BEGIN), so neither waits on the other's.
        async with self._engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            try:
                async with self._writer():
                    # aiosqlite 0.22.1 has no public way to run a callable in the
                    # connection's thread; _execute is how its own methods do it (it queues
                    # the call and awaits its result; SQLAlchemy's dialect goes to its queue
                    # directly to set the isolation level). The callable gets the sqlite3
                    # connection itself.
                    stored = cast(
                        _Stored | None, await driver._execute(_rotate, driver._conn, params)
                    )
            except sqlite3.OperationalError as exc:
                # Locked past busy_timeout by another process, disk I/O: the engine's own
                # OperationalError is a 503 too (errors.py).
                raise DatabaseUnavailable("sqlite lane", None, exc) from exc
        if stored is None:
            return None
        session_id, user_id, roles, scope, stored_client_id, expires_at = stored
        return FreshRotation(
            session_id=self._read_uuid(session_id),
            user_id=self._read_uuid(user_id),
            roles=(json.loads(roles) if roles else None) or [],
            scope=scope,
            client_id=stored_client_id,
            expires_at=self._read_time(expires_at),
        )


def _processor(processor: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    # SQLite stores these types converted (none of them is native to it).
    assert processor is not None
    return processor
