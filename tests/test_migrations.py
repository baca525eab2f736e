"""The schema is made by Alembic alone, matches the models, and migrates both ways."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection, make_url

from authsvc.store.db import create_engine, head_revision, upgrade
from authsvc.store.models import Base
from tests import pg


async def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def compare(sync: Connection) -> list[object]:
                ctx = MigrationContext.configure(sync, opts={"compare_type": True})
                return list(compare_metadata(ctx, Base.metadata))

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    admin = pg.admin_url()
    name = f"authsvc_migr_{tmp_path.name[-12:].replace('-', '_').lower()}"
    pg.drop_database(admin, name)
    pg.create_database(admin, name)
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        pg.drop_database(admin, name)


def test_migrated_schema_matches_the_models(empty_database: str) -> None:
    upgrade(empty_database)
    assert asyncio.run(_diff(empty_database)) == []


def test_migrations_downgrade_and_upgrade_again(empty_database: str) -> None:
    from alembic import command

    from authsvc.store.db import alembic_config

    upgrade(empty_database)
    command.downgrade(alembic_config(empty_database), "base")
    upgrade(empty_database)
    assert head_revision() is not None
    assert asyncio.run(_diff(empty_database)) == []


def test_existing_unverified_signups_are_marked_pending(tmp_path: Path) -> None:
    """Only accounts the audit trail shows a self sign-up made, and nothing switched on since,
    are marked: housekeeping may delete those and nothing else."""
    import sqlite3
    import uuid

    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    upgrade(url, "0014_mfa")
    ids = {name: uuid.uuid4().hex for name in ("pending", "enabled", "operator", "verified")}
    created = "2026-01-01 00:00:00.000000"
    with sqlite3.connect(path) as conn:
        for name, key in ids.items():
            conn.execute(
                "INSERT INTO users (id, username, email, email_verified_at, password_hash, roles,"
                " is_active, created_at, updated_at) VALUES (?, ?, ?, ?, 'x', '[]', ?, ?, ?)",
                (
                    key,
                    name,
                    f"{name}@example.org",
                    created if name == "verified" else None,
                    name == "verified",
                    created,
                    created,
                ),
            )
            actor = None if name == "operator" else "signup"
            conn.execute(
                "INSERT INTO audit_events (at, event, actor, user_id, username)"
                " VALUES (?, 'user_created', ?, ?, ?)",
                (created, actor, key, name),
            )
        # Switched on by an operator, then off again: someone took it over.
        conn.execute(
            "INSERT INTO audit_events (at, event, actor, user_id, username)"
            " VALUES (?, 'user_enabled', 'cli', ?, 'enabled')",
            (created, ids["enabled"]),
        )
    upgrade(url)
    with sqlite3.connect(path) as conn:
        marked = conn.execute(
            "SELECT username FROM users WHERE signup_pending_since IS NOT NULL"
        ).fetchall()
    assert marked == [("pending",)]


def test_the_head_read_off_the_files_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from authsvc.store.db import _head_from_files, alembic_config, migrations_dir

    alembics = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert _head_from_files(migrations_dir() / "versions") == alembics == head_revision()


@pytest.mark.parametrize(
    "files",
    [
        {"a.py": 'revision = "a"\ndown_revision = None\n', "b.py": 'revision = "b"\n'},
        {  # a merge: two parents
            "a.py": 'revision = "a"\ndown_revision = None\n',
            "b.py": 'revision = "b"\ndown_revision = "a"\n',
            "c.py": 'revision = "c"\ndown_revision = "a"\n',
            "d.py": 'revision = "d"\ndown_revision = ("b", "c")\n',
        },
        {  # two heads
            "a.py": 'revision = "a"\ndown_revision = None\n',
            "b.py": 'revision: str = "b"\ndown_revision: str | None = "a"\n',
            "c.py": "revision: str = 'c'\ndown_revision: str | None = 'a'\n",
        },
        {"a.py": 'revision = "a"\ndown_revision = "gone"\n'},
    ],
    ids=["no-parent-line", "merge", "two-heads", "unknown-parent"],
)
def test_migration_files_it_cannot_read_leave_the_answer_to_alembic(
    tmp_path: Path, files: dict[str, str]
) -> None:
    from authsvc.store.db import _head_from_files

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert _head_from_files(tmp_path) is None
