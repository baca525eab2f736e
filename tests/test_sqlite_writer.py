"""SQLite write transactions of one process queue in the event loop (authsvc/store/db.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from authsvc.store.db import Database

pytestmark = pytest.mark.anyio


async def test_concurrent_sqlite_writers_of_one_process_all_commit(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'w.db'}", pool_size=4)
    try:
        async with db.transaction() as s:
            await s.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
            await s.execute(text("INSERT INTO counter VALUES (0)"))

        async def bump() -> None:
            async with db.transaction() as s:
                n = (await s.execute(text("SELECT n FROM counter"))).scalar_one()
                await asyncio.sleep(0)  # let the others try to write in between
                await s.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})

        # More writers than pooled connections: read-then-write without lost updates.
        await asyncio.wait_for(asyncio.gather(*(bump() for _ in range(20))), 30)
        async with db.read() as s:
            assert (await s.execute(text("SELECT n FROM counter"))).scalar_one() == 20
    finally:
        await db.dispose()


async def test_one_connection_runs_consecutive_write_transactions(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        async with db.engine.connect() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
            await conn.commit()
            await asyncio.wait_for(conn.execute(text("INSERT INTO t VALUES (1)")), 10)
            await conn.commit()
        async with db.transaction() as s:  # the lock went back with the connection
            assert (await s.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
    finally:
        await db.dispose()
