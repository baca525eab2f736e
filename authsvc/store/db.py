"""Engine, session scopes and migrations.

SQLite runs every write transaction as BEGIN IMMEDIATE: SQLite cannot upgrade a read snapshot to
a write lock while another writer commits, so a read-then-write transaction (refresh rotation)
must take the write lock up front. Read-only scopes use a plain BEGIN so they never queue behind
writers (WAL mode).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_

from authsvc.store.fastlane import FastLane
from authsvc.store.rotation import RefreshLane
from authsvc.store.sqlitelane import SQLiteLane, configure_connection

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("authsvc.store")

_READONLY = "authsvc_readonly"
# An arbitrary constant: the PostgreSQL advisory lock that serialises migrations and first-key
# creation across processes.
MIGRATION_LOCK_ID = 0x61757468_7376


def async_url(url: str) -> str:
    """Accept the URLs people paste and pick our async driver for them."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise ValueError(f"unsupported database {backend!r}: use sqlite:// or postgresql://")
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, *, pool_size: int = 10, timeout: float = 5.0) -> AsyncEngine:
    aurl = async_url(url)
    if aurl.startswith("sqlite"):
        path = make_url(aurl).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            aurl,
            connect_args={"timeout": 30},
            pool_size=pool_size,
            max_overflow=0,
            hide_parameters=True,
        )
        _configure_sqlite(engine)
        return engine
    # A fixed pool, no overflow: under load, overflow connections are closed as soon as they
    # are returned and reopened for the next request (TLS negotiation, authentication, a cold
    # prepared-statement cache each time).
    # Requests beyond the pool wait for a connection, bounded by pool_timeout (a 503).
    engine = create_async_engine(
        aurl,
        # Errors (and so logs) never show bound values: digests, hashes, user data.
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=timeout,
        # No pool_pre_ping: it costs every request one more round trip. Instead, an error on a
        # connection asyncpg saw close is a disconnect to SQLAlchemy (the dialect's
        # is_disconnect), which invalidates it and every connection pooled before it; so
        # service resumes by itself once the database is back, and only the request that found
        # a broken connection gets a 503 (tests/test_faults.py).
        connect_args={
            "timeout": timeout,
            "command_timeout": timeout * 2,
            "server_settings": pg_server_settings(timeout),
        },
    )
    return engine


def pg_server_settings(timeout: float) -> dict[str, str]:
    return {
        "application_name": "authsvc",
        # Bounded waits: a stuck lock or statement becomes a 503, not a hung request.
        "statement_timeout": str(int(timeout * 2000)),
        "lock_timeout": str(int(timeout * 1000)),
        "idle_in_transaction_session_timeout": "60000",
    }


class _SQLiteWriter:
    """One write transaction at a time per process, queued in the event loop.

    SQLite allows one writer; a second BEGIN IMMEDIATE waits in SQLite's busy handler, which
    polls with growing sleeps (up to 100 ms each) in the driver's thread; under load that
    starves waiters for seconds. Writers of the
    same process now wait here instead, in FIFO order, and are woken the moment the lock is
    free; the busy handler still arbitrates between processes. The lock is taken when the
    transaction begins and released when its connection goes back to the pool, i.e. after
    COMMIT or ROLLBACK.
    """

    _INFO_KEY = "authsvc_sqlite_writer"

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    def acquire(self, record: Any) -> None:
        """Called from the engine's sync code, which runs in SQLAlchemy's greenlet."""
        if self._INFO_KEY in record.info:
            # A later transaction on the same checkout (a Connection committed and went on):
            # it holds the lock already, until it goes back to the pool.
            return
        lock = self._lock()
        try:
            await_(asyncio.wait_for(lock.acquire(), self.wait))
        except TimeoutError as exc:
            raise SQLiteWriterTimeout(
                f"no SQLite write lock within {self.wait} s", None, exc
            ) from exc
        record.info[self._INFO_KEY] = lock

    def release(self, record: Any) -> None:
        lock = record.info.pop(self._INFO_KEY, None)
        if lock is not None:
            lock.release()

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """The same lock, held by a coroutine for a write that runs outside SQLAlchemy's
        transactions (store/sqlitelane.py). Nothing is put in the connection record, so the
        pool's checkin hook has nothing to release: this scope releases it, on every path."""
        lock = self._lock()
        try:
            await asyncio.wait_for(lock.acquire(), self.wait)
        except TimeoutError as exc:
            raise SQLiteWriterTimeout(
                f"no SQLite write lock within {self.wait} s", None, exc
            ) from exc
        try:
            yield
        finally:
            lock.release()


class SQLiteWriterTimeout(OperationalError):
    """Waited too long for this process's SQLite write lock (rendered as a 503)."""


# Each SQLite engine's writer lock, for the code that writes on its raw connections.
_WRITERS: weakref.WeakKeyDictionary[AsyncEngine, _SQLiteWriter] = weakref.WeakKeyDictionary()


def sqlite_writer(engine: AsyncEngine) -> _SQLiteWriter:
    return _WRITERS[engine]


def _configure_sqlite(engine: AsyncEngine) -> None:
    writer = _WRITERS[engine] = _SQLiteWriter(wait=30.0)  # as long as the busy_timeout below

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the driver so BEGIN is ours (see module doc).
        configure_connection(dbapi_conn)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get(_READONLY, False)
        if not readonly:
            writer.acquire(conn.connection._connection_record)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        writer.release(record)


class Database:
    """The engine plus two session factories: read-write (the default) and read-only."""

    def __init__(self, url: str, *, pool_size: int = 10, timeout: float = 5.0) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size, timeout=timeout)
        self.dialect = self.engine.dialect.name
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self.readonly_sessions = async_sessionmaker(
            self.engine.execution_options(**{_READONLY: True}),
            expire_on_commit=False,
            autoflush=False,
        )
        # PostgreSQL only: one-statement refresh, /auth/me and feed poll (fastlane.py).
        self.fast_lane = (
            FastLane(
                url,
                pool_size=pool_size,
                timeout=timeout,
                server_settings=pg_server_settings(timeout),
            )
            if self.dialect == "postgresql"
            else None
        )
        # A live token's rotation without the session's machinery: the fast lane on
        # PostgreSQL, one hop to the lane's own thread on SQLite (sqlitelane.py). /auth/me stays
        # on the session on SQLite: a read needs no writer lock and few thread hops.
        self.refresh_lane: RefreshLane | None = self.fast_lane
        self._sqlite_lane: SQLiteLane | None = None
        path = make_url(self.engine.url).database
        if self.dialect == "sqlite" and path and path != ":memory:":
            self._sqlite_lane = SQLiteLane(
                path, self.engine.dialect, sqlite_writer(self.engine).held
            )
            self.refresh_lane = self._sqlite_lane

    def refresh_lane_for(self, session: AsyncSession) -> RefreshLane | None:
        """The refresh lane, unless `session`'s transaction holds SQLite's writer lock (the
        OAuth token endpoint reads its client in the request's session before the refresh):
        the lane would wait for that lock, held by the request that waits for the lane, until
        the writer lock's timeout. That request takes the full path in its own transaction."""
        if self.dialect == "sqlite" and session.in_transaction():
            return None
        return self.refresh_lane

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work outside a request (CLI, start-up): commit on success."""
        async with self.sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        # Closing (not rolling back) ends the transaction and keeps loaded objects readable.
        async with self.readonly_sessions() as session:
            yield session

    async def ping(self) -> None:
        async with self.readonly_sessions() as session:
            await session.execute(text("SELECT 1"))

    async def schema_revision(self) -> str | None:
        async with self.readonly_sessions() as session:
            try:
                result = await session.execute(text("SELECT version_num FROM alembic_version"))
            except DBAPIError:
                return None
            finally:
                await session.rollback()
            return result.scalar_one_or_none()

    def pool_usage(self) -> dict[str, float | None]:
        """Pool gauges for metrics (a QueuePool has them; SQLite's pool may not)."""
        pool: Any = self.engine.sync_engine.pool
        values: dict[str, float | None] = {}
        for name, method in (
            ("authsvc_db_pool_size", "size"),
            ("authsvc_db_pool_checked_out", "checkedout"),
            ("authsvc_db_pool_overflow", "overflow"),
        ):
            read = getattr(pool, method, None)
            values[name] = float(read()) if callable(read) else None
        return values

    async def dispose(self) -> None:
        if self.fast_lane is not None:
            await self.fast_lane.close()
        if self._sqlite_lane is not None:
            await self._sqlite_lane.close()
        await self.engine.dispose()


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise RuntimeError("Alembic migrations not found")


def alembic_config(url: str) -> Config:
    # Alembic is imported where it is used: it (with every migration module it loads) costs
    # more than the rest of a CLI command, which usually finds the schema at head.
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["database_url"] = url
    return cfg


# A migration file's `revision = "..."` and `down_revision = "..."` lines (annotated or not).
_REVISION_LINE = re.compile(
    r"""^(revision|down_revision)\b[^=\n]*=\s*(?:None|"([^"\n]*)"|'([^'\n]*)')\s*$""",
    re.MULTILINE,
)


def _head_from_files(versions: Path) -> str | None:
    """The head of the migration files when they form one plain chain (each names one
    revision and at most one parent, and exactly one is nobody's parent); None otherwise."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        found: dict[str, str | None] = {}
        for match in _REVISION_LINE.finditer(path.read_text(encoding="utf-8")):
            found[match.group(1)] = match.group(2) or match.group(3)
        if found.get("revision") is None or "down_revision" not in found:
            return None  # a merge (a tuple of parents) or a layout this does not read
        revisions.add(str(found["revision"]))
        if found["down_revision"] is not None:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


@functools.cache
def head_revision() -> str | None:
    """The newest migration's revision: read off the files when they are one chain (the usual
    case, tests/test_migrations.py checks it agrees with alembic), else alembic's answer."""
    head = _head_from_files(migrations_dir() / "versions")
    if head is not None:
        return head
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def upgrade(url: str, revision: str = "head") -> None:
    """Run migrations to `revision`. Blocking: call from a thread inside an event loop."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, url, revision)


async def upgrade_if_behind(database: Database) -> None:
    """Migrate to head unless the schema is there already: reading the revision is one query,
    while alembic with nothing to do still costs a good part of a second."""
    if await database.schema_revision() != head_revision():
        await upgrade_async(database.url)


def after_commit(session: AsyncSession, action: Callable[[], None]) -> None:
    """Run `action` (synchronous, no I/O) once `session`'s transaction has committed, and not
    at all if it rolls back: a mail whose link points at a row must not leave before the row
    exists."""
    event.listen(session.sync_session, "after_commit", lambda _s: action(), once=True)
