"""Background pruning and scheduled key rotation inside the server process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import func, select

from authsvc.store.models import AuditEvent, Session, SigningKey
from tests.conftest import Harness

pytestmark = pytest.mark.anyio


async def _count(harness: Harness, model: type) -> int:
    async with harness.state.database.read() as db:
        return int((await db.execute(select(func.count()).select_from(model))).scalar_one())


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float = 8.0) -> None:
    # The background tasks run on real time (their interval), so this waits, briefly.
    for _ in range(int(seconds / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the background task did not run")


async def test_scheduled_rotation_happens_once_when_processes_race(harness: Harness) -> None:
    keys = harness.state.keys
    now = harness.clock.now()
    async with harness.state.database.transaction() as db:
        assert await keys.rotate_if_due(db, now, interval=3600) is None  # the first key is new
    harness.clock.advance(3601)
    later = harness.clock.now()

    async def attempt() -> object:
        async with harness.state.database.transaction() as db:
            return await keys.rotate_if_due(db, later, interval=3600)

    # Two processes waking together: separate connections and transactions, one lock.
    results = await asyncio.gather(*(attempt() for _ in range(4)))
    assert sum(r is not None for r in results) == 1
    assert await _count(harness, SigningKey) == 2


@pytest.mark.parametrize("settings_overrides", [{"prune_interval": 1}])
async def test_expired_sessions_are_pruned_in_the_background(harness: Harness) -> None:
    await harness.create_user()
    await harness.login()
    assert await _count(harness, Session) == 1
    harness.clock.advance(harness.state.settings.session_max_age + 1)

    async def pruned() -> bool:
        return await _count(harness, Session) == 0

    await _eventually(pruned)


def test_rotation_interval_must_exceed_publish_ahead() -> None:
    from authsvc.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="ROTATION_INTERVAL"):
        load_settings(key_rotation_interval=60, key_publish_ahead=300)
    assert load_settings(key_rotation_interval=86400).key_rotation_interval == 86400


@pytest.mark.parametrize(
    "settings_overrides", [{"key_rotation_interval": 10, "key_publish_ahead": 5}]
)
async def test_keys_rotate_on_schedule_in_the_background(harness: Harness) -> None:
    assert await _count(harness, SigningKey) == 1
    harness.clock.advance(11)

    async def rotated() -> bool:
        return await _count(harness, SigningKey) == 2

    await _eventually(rotated)
    async with harness.state.database.read() as db:
        actors = (await db.execute(select(AuditEvent.actor))).scalars().all()
    assert actors == ["scheduler"]


async def test_prune_keeps_the_live_successor_of_an_expired_refresh_token(
    harness: Harness,
) -> None:
    from authsvc.services.maintenance import prune

    await harness.create_user()
    first = (await harness.login())["refresh_token"]
    ttl = harness.state.settings.refresh_token_ttl
    harness.clock.advance(ttl - 3600)
    rotated = await harness.refresh(first)
    assert rotated.status_code == 200
    # The first token has expired; its successor, issued later, has not.
    harness.clock.advance(3601)
    report = await prune(harness.state.database, harness.state.keys, harness.clock.now(), 1)
    assert report.refresh_tokens == 1
    again = await harness.refresh(rotated.json()["refresh_token"])
    assert again.status_code == 200, again.text
