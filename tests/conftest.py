"""Fixtures: a migrated database (SQLite and PostgreSQL), settings, a movable clock, the app.

Every test that takes `client` runs once per backend. PostgreSQL gets a private database per
test session (created here, dropped at the end) so parallel runs never collide; SQLite gets a
fresh copy of a migrated template file per test.
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import os
import secrets
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from authsvc.app import create_app
from authsvc.clock import MovableClock
from authsvc.config import Settings
from authsvc.state import AppState
from authsvc.store.db import upgrade
from tests import pg

TEST_KEK = "mHPPqSoT3QCCd3W8mw0Zt1-vXhP_K-yEq2xXUo0nqt0="
PASSWORD = "correct horse battery staple"


def pytest_configure(config: pytest.Config) -> None:
    """Compile authsvc's sources and migrations before any test starts a process (`python -m
    authsvc`): with PYTHONDONTWRITEBYTECODE set, each process would otherwise compile every module
    again. Only what changed is compiled, so `make test` and a bare `pytest` both start quickly."""
    if not hasattr(config, "workerinput"):  # once, in the pytest-xdist controller
        for sources in ("authsvc", "migrations"):
            compileall.compile_dir(Path(__file__).resolve().parent.parent / sources, quiet=1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules that start real processes first: with several workers (`make test`), the long
    ones then run while the short ones fill in around them, not one after another at the end.
    The order is the same in every worker, as pytest-xdist requires."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _first_start(database_url: str, data_dir: Path) -> None:
    # An hour back: a test's clock, read before this runs, must already find the key active.
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    app = create_app(make_settings(database_url, data_dir), MovableClock(started))
    async with app.router.lifespan_context(app):
        pass


def seed(database_url: str, data_dir: Path) -> None:
    """What a first start writes (the server's HMAC keys and a signing key), made once per test
    session instead of once per test: generating an RSA key is most of an app's start-up. Tests
    of the first start itself take `empty_database_url`."""
    run(_first_start(database_url, data_dir))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "authsvc.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def seeded_sqlite_template(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seeded") / "authsvc.db"
    shutil.copy(sqlite_template, path)
    seed(f"sqlite:///{path}", tmp_path_factory.mktemp("seed-data"))
    return path


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    admin = pg.admin_url()
    name = f"authsvc_test_{os.getpid()}_{secrets.token_hex(3)}"
    pg.create_database(admin, name)
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        seed(url, tmp_path_factory.mktemp("seed-data"))
        pg.keep_seed(url)
        yield url
    finally:
        pg.drop_database(admin, name)


def backends() -> list[Any]:
    return ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


def _database(request: pytest.FixtureRequest, tmp_path: Path, *, seeded: bool) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue(
            "seeded_sqlite_template" if seeded else "sqlite_template"
        )
        target = tmp_path / "authsvc.db"
        shutil.copy(template, target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("postgres_url")
    pg.truncate_all(url, seeded=seeded)
    return url


@pytest.fixture(params=backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database holding what a first start writes (`seed`)."""
    return _database(request, tmp_path, seeded=True)


@pytest.fixture
def sqlite_url(seeded_sqlite_template: Path, tmp_path: Path) -> str:
    """For modules where request handling, not storage, is under test: they override
    `database_url` with this one backend (the stores run every other module on both)."""
    target = tmp_path / "authsvc.db"
    shutil.copy(seeded_sqlite_template, target)
    return f"sqlite:///{target}"


@pytest.fixture(params=backends())
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database no server has started on yet."""
    return _database(request, tmp_path, seeded=False)


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "key_encryption_key": TEST_KEK,
        "issuer": "https://auth.test",
        "audience": "api.test",
        # Cheap hashing keeps the suite fast; the parameters are settings, the code path is real.
        "argon2_time_cost": 1,
        "argon2_memory_cost": 1024,
        "argon2_parallelism": 1,
        "auto_migrate": False,
        "rate_limit_enabled": False,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module (or via indirect parametrisation) to change settings."""
    return {}


@pytest.fixture
def settings(database_url: str, tmp_path: Path, settings_overrides: dict[str, Any]) -> Settings:
    return make_settings(database_url, tmp_path / "data", **settings_overrides)


@pytest.fixture
def clock() -> MovableClock:
    # Real time at the start, so tokens also verify with libraries that read the wall clock.
    return MovableClock(datetime.now(UTC).replace(microsecond=0))


@dataclass
class Harness:
    client: httpx.AsyncClient
    state: AppState
    clock: MovableClock

    async def create_user(
        self, name: str = "alice", password: str = PASSWORD, roles: list[str] | None = None
    ) -> str:
        async with self.state.database.transaction() as db:
            user = await self.state.users.create(db, name, password, self.clock.now(), roles or [])
        return str(user.id)

    async def login(self, name: str = "alice", password: str = PASSWORD) -> dict[str, Any]:
        response = await self.client.post(
            "/auth/login", json={"username": name, "password": password}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def refresh(self, token: str) -> httpx.Response:
        return await self.client.post("/auth/refresh", json={"refresh_token": token})

    async def me(self, access_token: str) -> httpx.Response:
        return await self.client.get(
            "/auth/me", headers={"Authorization": f"Bearer {access_token}"}
        )


@contextlib.contextmanager
def sql_sent(state: AppState) -> Iterator[list[str]]:
    """The SQL the app sends while the block runs."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    engine = state.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
async def harness(settings: Settings, clock: MovableClock) -> AsyncIterator[Harness]:
    app = create_app(settings, clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Harness(client=client, state=app.state.authsvc, clock=clock)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _shape(sql: str) -> str:
    words = sql.replace('"', "").split()
    verb = words[0].upper()
    if verb == "SELECT" and "FROM" in words:
        return f"SELECT {words[words.index('FROM') + 1]}"
    if verb == "UPDATE":
        return f"UPDATE {words[1]}"
    return " ".join([verb, *words[2:3]])  # INSERT INTO t, DELETE FROM t


@contextlib.contextmanager
def statements(harness: Harness) -> Iterator[Counter[str]]:
    """Each SQL statement the app runs meanwhile, as its verb and first table."""
    seen: Counter[str] = Counter()

    def note(*args: Any) -> None:
        seen[_shape(args[2])] += 1

    engine = harness.state.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)
