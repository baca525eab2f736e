"""PostgreSQL helpers for the test suite (the server at 127.0.0.1:5432, trust auth)."""

from __future__ import annotations

import asyncio
import os

import asyncpg
from sqlalchemy.engine import make_url

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def admin_url() -> str:
    return os.environ.get("AUTHSVC_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(_dsn(url))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def create_database(admin: str, name: str) -> None:
    asyncio.run(_execute(admin, f'CREATE DATABASE "{name}"'))


def drop_database(admin: str, name: str) -> None:
    asyncio.run(_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# What a first start writes (tests/conftest.py `seed`), kept in schema "seed" and put back after
# each truncate.
SEEDED_TABLES = ("signing_keys", "server_secrets")


async def _keep_seed(url: str) -> None:
    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute("CREATE SCHEMA seed")
        for table in SEEDED_TABLES:
            await conn.execute(f'CREATE TABLE seed."{table}" AS TABLE public."{table}"')
    finally:
        await conn.close()


def keep_seed(url: str) -> None:
    asyncio.run(_keep_seed(url))


async def _truncate(url: str, seeded: bool) -> None:
    conn = await asyncpg.connect(_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename NOT IN ('alembic_version', 'feed_state')"
        )
        if rows:
            names = ", ".join(f'"{r["tablename"]}"' for r in rows)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        if seeded:
            for table in SEEDED_TABLES:
                await conn.execute(f'INSERT INTO public."{table}" SELECT * FROM seed."{table}"')
        # feed_state is the migration's one row: back to a fresh database's feed.
        await conn.execute("DELETE FROM feed_state")
        await conn.execute(
            "INSERT INTO feed_state (id, epoch, low_water, reset_at) "
            "VALUES (1, left(md5(random()::text), 16), 0, now())"
        )
    finally:
        await conn.close()


def truncate_all(url: str, *, seeded: bool = False) -> None:
    asyncio.run(_truncate(url, seeded))
