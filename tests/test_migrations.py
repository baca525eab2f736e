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
