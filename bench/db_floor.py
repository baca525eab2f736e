"""The refresh transaction's database part on PostgreSQL, in client CPU per refresh: authsvc's
SQLAlchemy session with the ORM query (as before), with Core statements on the session's
connection (as now), raw asyncpg statements inside the session's transaction, and raw asyncpg on
its own connection; each runs the same SQL (BEGIN, token+session+user select, rotation CTE,
COMMIT) against a private database on 127.0.0.1:5432.

    .venv/bin/python bench/db_floor.py [N]
"""

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import uvloop
from cryptography.fernet import Fernet
from runner.common import BIN, PASSWORD, USERNAME
from runner.servers import authsvc_env, postgres_database
from sqlalchemy import select
from sqlalchemy.dialects import postgresql

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
SELECT_THEN_ROTATE = "BEGIN, select, rotate, COMMIT"


async def measure(db_url: str, state) -> None:
    # authsvc's modules read no settings at import; the app reads them from the environment.
    from authsvc.services.auth import ClientInfo
    from authsvc.store.models import RefreshToken, Session, User
    from authsvc.store.repositories import RefreshTokenRepository, _pg_rotate_statement

    now = state.clock.now()
    # a session + first token through the real login
    async with state.database.transaction() as db:
        p = await state.auth.login(db, USERNAME, PASSWORD, now, ClientInfo())
    digest = state.auth.refresh_tokens.digest(p.refresh_token)

    def child_of(row, sess):
        return RefreshToken(
            session_id=sess.id,
            parent_id=row.id,
            digest=os.urandom(32),
            issued_at=now,
            expires_at=row.expires_at,
        )

    async def sqla(d):  # before: the ORM query (by_digest)
        async with state.database.sessions() as s:
            repo = RefreshTokenRepository(s)
            row, sess, _ = await repo.by_digest(d)
            child = child_of(row, sess)
            assert await repo.rotate(row.id, child, now)
            await s.commit()
            return child.digest

    dialect = postgresql.asyncpg.dialect()
    sel = (
        select(RefreshToken, Session, User)
        .join(Session, Session.id == RefreshToken.session_id)
        .join(User, User.id == Session.user_id)
        .where(RefreshToken.digest == b"")
    ).compile(dialect=dialect)
    rot = _pg_rotate_statement().compile(dialect=dialect)
    sel_sql = str(sel)
    rot_sql = str(rot)
    order = list(rot.positiontup)
    conn = await asyncpg.connect(db_url)

    def rotate_values(r, nd):
        return {
            "rt_token_id": r[0],
            "rt_now": now,
            "rt_digest": nd,
            "rt_issued_at": now,
            "rt_expires_at": r["expires_at"],
        }

    async def raw(d):
        async with conn.transaction():
            r = await conn.fetchrow(sel_sql, d)
            nd = os.urandom(32)
            vals = rotate_values(r, nd)
            assert await conn.fetchrow(rot_sql, *[vals[k] for k in order]) is not None
        return nd

    async def core(d):  # authsvc now: RefreshTokenRepository.for_rotation + rotate
        async with state.database.sessions() as s:
            repo = RefreshTokenRepository(s)
            row, sess, _ = await repo.for_rotation(d)
            child = child_of(row, sess)
            assert await repo.rotate(row.id, child, now)
            await s.commit()
            return child.digest

    async def rawtx(d):
        async with state.database.sessions() as s:
            c = await s.connection()
            fairy = await c.get_raw_connection()
            ad = fairy.dbapi_connection
            if ad._transaction is None:
                await ad._start_transaction()
            ac = ad._connection
            r = await ac.fetchrow(sel_sql, d)
            nd = os.urandom(32)
            vals = rotate_values(r, nd)
            assert await ac.fetchrow(rot_sql, *[vals[k] for k in order]) is not None
            await s.commit()
        return nd

    res = {}
    variants = [("orm", sqla), ("asyncpg", raw), ("core (authsvc)", core)]
    variants.append(("raw-in-session", rawtx))
    for name, f in variants * 2:
        for _ in range(200):
            digest = await f(digest)
        t = time.process_time()
        for _ in range(N):
            digest = await f(digest)
        res.setdefault(name, []).append((time.process_time() - t) / N * 1e3)
    await conn.close()
    for k, v in res.items():
        print(f"{k}: {min(v):.3f} ms client CPU per refresh transaction ({SELECT_THEN_ROTATE})")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as st:
        wd = Path(tmp)
        db_url = st.enter_context(postgres_database())
        env = authsvc_env(db_url, wd, Fernet.generate_key().decode())
        cli = str(BIN / "authsvc")
        subprocess.run([cli, "migrate"], env=env, check=True, capture_output=True)
        subprocess.run(
            [cli, "users", "create", USERNAME, "--password-stdin"],
            env=env,
            input=PASSWORD + "\n",
            text=True,
            check=True,
            capture_output=True,
        )
        os.environ.update(env)
        from authsvc.app import create_app

        app = create_app()

        async def run() -> None:
            async with app.router.lifespan_context(app):
                await measure(db_url, app.state.authsvc)

        uvloop.run(run())


main()
