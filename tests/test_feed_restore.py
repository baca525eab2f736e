"""A verifier following the revocation feed across a database restore, on SQLite (an online
backup of the file, copied back) and PostgreSQL (pg_dump, pg_restore into a fresh database).

The restored database hands out the event ids the verifier has already seen again; without the
epoch/checksum cursor the verifier would skip the revocations written under those ids.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from authsvc.app import create_app
from authsvc.clock import MovableClock
from authsvc.config import Settings
from authsvc.verifier import TokenError, Verifier
from tests import pg
from tests.conftest import PASSWORD, make_settings

pytestmark = pytest.mark.anyio

ISSUER = "https://auth.test"


class Upstream(httpx.AsyncBaseTransport):
    """The network path to authsvc; the test points it at whichever app is running."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.app is None:
            raise httpx.ConnectError("authsvc is down", request=request)
        return await httpx.ASGITransport(app=self.app).handle_async_request(request)


class Backup:
    """Take a backup of the test's database and restore it as a new database."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir
        self.created: list[str] = []

    def _dsn(self, url: str) -> str:
        return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    def dump(self) -> Path:
        target = self.workdir / "backup"
        if self.url.startswith("sqlite"):
            # What a file-level backup of a live SQLite database must be: the backup API.
            source = sqlite3.connect(make_url(self.url).database or "")
            copy = sqlite3.connect(target)
            with copy:
                source.backup(copy)
            source.close()
            copy.close()
        else:
            subprocess.run(
                ["pg_dump", "-Fc", "--no-owner", "-f", str(target), self._dsn(self.url)],
                check=True,
                timeout=60,
            )
        return target

    async def restore(self, backup: Path) -> str:
        if self.url.startswith("sqlite"):
            restored = self.workdir / "restored.db"
            shutil.copy(backup, restored)
            return f"sqlite:///{restored}"
        name = f"authsvc_restore_{os.getpid()}_{secrets.token_hex(3)}"
        await asyncio.to_thread(pg.create_database, pg.admin_url(), name)
        self.created.append(name)
        url = make_url(self.url).set(database=name).render_as_string(hide_password=False)
        subprocess.run(
            ["pg_restore", "--no-owner", "-d", self._dsn(url), str(backup)],
            check=True,
            timeout=60,
        )
        return url

    def drop(self) -> None:
        for name in self.created:
            pg.drop_database(pg.admin_url(), name)


@pytest.fixture
def backup(settings: Settings, tmp_path: Path) -> Iterator[Backup]:
    b = Backup(settings.resolved_database_url, tmp_path)
    try:
        yield b
    finally:
        b.drop()


@asynccontextmanager
async def serving(settings: Settings, clock: MovableClock, net: Upstream) -> AsyncIterator[None]:
    app = create_app(settings, clock)
    async with app.router.lifespan_context(app):
        net.app = app
        try:
            yield
        finally:
            net.app = None


async def _login(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post(
        f"{ISSUER}/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _logout(client: httpx.AsyncClient, tokens: dict[str, Any]) -> None:
    response = await client.post(
        f"{ISSUER}/auth/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status_code == 204, response.text


async def _refused(verifier: Verifier, tokens: dict[str, Any]) -> bool:
    try:
        await verifier.verify(tokens["access_token"])
    except TokenError:
        return True
    return False


@pytest.fixture
async def world(
    settings: Settings, clock: MovableClock
) -> AsyncIterator[tuple[Upstream, httpx.AsyncClient, Verifier]]:
    net = Upstream()
    async with httpx.AsyncClient(transport=net) as client:
        verifier = Verifier(
            issuer=ISSUER,
            audience="api.test",
            http_client=client,
            clock=lambda: clock.now().timestamp(),
        )
        yield net, client, verifier


async def _create_alice(settings: Settings, clock: MovableClock) -> None:
    app = create_app(settings, clock)
    async with app.router.lifespan_context(app):
        state = app.state.authsvc
        async with state.database.transaction() as db:
            await state.users.create(db, "alice", PASSWORD, clock.now(), [])


async def test_verifier_refuses_every_revocation_made_after_a_restore_of_an_older_dump(
    settings: Settings,
    clock: MovableClock,
    backup: Backup,
    world: tuple[Upstream, httpx.AsyncClient, Verifier],
    tmp_path: Path,
) -> None:
    net, client, verifier = world
    await _create_alice(settings, clock)
    async with serving(settings, clock, net):
        sessions = [await _login(client) for _ in range(8)]
        await _logout(client, sessions[0])
        dump = backup.dump()  # holds sessions[0]'s revocation only
        await _logout(client, sessions[1])
        await _logout(client, sessions[2])
        await verifier.start()  # its last successful poll: it has seen 0, 1 and 2
        assert all([await _refused(verifier, sessions[i]) for i in (0, 1, 2)])
    # authsvc is down; its database is restored from the older dump.
    restored = make_settings(await backup.restore(dump), tmp_path / "data-restored")
    try:
        async with serving(restored, clock, net):
            # The restored database hands out the ids of 1's and 2's events again.
            for i in (4, 5, 6):
                await _logout(client, sessions[i])
            assert await verifier.sync()
            # Every revocation made after the last successful poll is refused ...
            assert all([await _refused(verifier, sessions[i]) for i in (4, 5, 6)])
            assert verifier.revocations is not None and verifier.revocations.resyncs == 1
            # ... and those seen before the restore still are (a revocation never un-happens).
            assert all([await _refused(verifier, sessions[i]) for i in (0, 1, 2)])
            assert not await _refused(verifier, sessions[7])
            # Back to plain cursor following.
            await _logout(client, sessions[7])
            assert await verifier.sync()
            assert await _refused(verifier, sessions[7])
            assert verifier.revocations.resyncs == 1
    finally:
        await verifier.stop()


async def test_a_verifier_polling_before_the_restored_database_catches_up_resynchronises(
    settings: Settings,
    clock: MovableClock,
    backup: Backup,
    world: tuple[Upstream, httpx.AsyncClient, Verifier],
    tmp_path: Path,
) -> None:
    net, client, verifier = world
    await _create_alice(settings, clock)
    async with serving(settings, clock, net):
        sessions = [await _login(client) for _ in range(4)]
        dump = backup.dump()  # no revocation at all yet
        await _logout(client, sessions[0])
        await verifier.start()
    restored = make_settings(await backup.restore(dump), tmp_path / "data-restored")
    try:
        async with serving(restored, clock, net):
            # The cursor points past the restored database's last event: resync at once.
            assert await verifier.sync()
            for i in (1, 2, 3):
                await _logout(client, sessions[i])
            assert await verifier.sync()
            assert all([await _refused(verifier, sessions[i]) for i in (0, 1, 2, 3)])
            assert verifier.revocations is not None and verifier.revocations.resyncs == 1
    finally:
        await verifier.stop()
