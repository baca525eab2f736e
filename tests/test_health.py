"""GET /healthz and /readyz."""

from __future__ import annotations

import pytest

from tests.conftest import Harness

pytestmark = pytest.mark.anyio


async def test_healthz_is_ok(harness: Harness) -> None:
    response = await harness.client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_readyz_checks_database_schema_and_key(harness: Harness) -> None:
    response = await harness.client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "schema": "ok", "signing_key": "ok"}


async def test_readyz_is_red_when_the_schema_is_behind(harness: Harness) -> None:
    from sqlalchemy import text

    from authsvc.store.db import head_revision

    async def set_version(version: str | None) -> None:
        async with harness.state.database.transaction() as db:
            await db.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": version})

    await set_version("old")
    try:
        response = await harness.client.get("/readyz")
    finally:
        await set_version(head_revision())  # the PostgreSQL database is shared by the session
    assert response.status_code == 503
    assert response.json()["checks"]["schema"] == "at old"
