"""The refresh rotation on SQLite in one hop to a thread of our own.

The driver (aiosqlite) runs each call in its connection's thread and hands the result back to
the event loop: a refresh through the session is many such hops (BEGIN IMMEDIATE, then cursor,
execute, fetch and close for each statement), all of them while this process's writer lock is
held, so refreshes are bound by that latency rather than by the cores. Here the whole write
transaction, BEGIN IMMEDIATE to COMMIT, runs as one function in a thread this lane owns, on a
connection that only that thread opens and uses: one hop under the lock.

The statements are rotation.py's (SQLiteRotation); a token they decline writes nothing and the
caller classifies it. Writers of this process queue on the same lock as the session's write
transactions (db._SQLiteWriter), those of other processes on SQLite's own write lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy.engine import Dialect

from authsvc.store.errors import DatabaseUnavailable
from authsvc.store.rotation import FreshRotation, SQLiteRotation, sqlite_rotation

# Every connection to the database file, the engine's and this lane's: WAL so readers never
# wait for the writer, foreign keys enforced, and a busy wait as long as the writer lock's.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)


def configure_connection(connection: Any) -> None:
    """Autocommit (BEGIN is ours: see db.py) and the pragmas above, on a DB-API connection."""
    connection.isolation_level = None
    cursor = connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


class SQLiteLane:
    def __init__(
        self,
        path: str,
        dialect: Dialect,
        writer: Callable[[], AbstractAsyncContextManager[None]],
    ) -> None:
        self._path = path
        self._rotation: SQLiteRotation = sqlite_rotation(dialect)
        self._writer = writer
        # One thread, started on first use: the connection is opened, used and closed only
        # there (sqlite3's check_same_thread stays on).
        self._thread: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None

    async def rotate(self, values: dict[str, Any]) -> FreshRotation | None:
        """rotation.rotate_in_session on this lane's connection: None, having written
        nothing, unless the token is live."""
        bound = self._rotation.bind(values)
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="authsvc-sqlite")
        try:
            async with self._writer():
                stored = await loop.run_in_executor(self._thread, self._rotate, bound)
        except sqlite3.OperationalError as exc:
            # Locked past busy_timeout by another process, disk I/O: the engine's own
            # OperationalError is a 503 too (errors.py).
            raise DatabaseUnavailable("sqlite lane", None, exc) from exc
        return None if stored is None else self._rotation.fresh(stored)

    def _rotate(self, bound: dict[str, Any]) -> tuple[Any, ...] | None:
        """In the lane's thread: the write transaction, whole."""
        db = self._connection
        if db is None:
            db = self._connection = sqlite3.connect(self._path, timeout=30)
            configure_connection(db)
        db.execute("BEGIN IMMEDIATE")
        try:
            stored = self._rotation.run(db.execute, bound)
            db.execute("COMMIT" if stored is not None else "ROLLBACK")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return stored

    def _close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(thread, self._close)
            thread.shutdown(wait=False)
