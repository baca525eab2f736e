"""Background pruning and scheduled key rotation inside the server process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import jwt
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from authsvc.app import create_app
from authsvc.config import Settings
from authsvc.security.secrets import KeyEncryptionKeys, load_secrets, new_kek
from authsvc.services.housekeeping import Housekeeper
from authsvc.services.keys import KeyService
from authsvc.store.models import AuditEvent, PasskeyChallenge, Session, SigningKey
from tests.conftest import TEST_KEK, Harness


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """Key rotation is timed from a key's creation: a database no server has started on, so the
    key is made at the test's clock."""
    return empty_database_url


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


DAY = 86400


async def _signing_kid(harness: Harness) -> str:
    tokens = await harness.login()
    return str(jwt.get_unverified_header(tokens["access_token"])["kid"])


async def _published(harness: Harness) -> set[str]:
    jwks = (await harness.client.get("/.well-known/jwks.json")).json()
    return {k["kid"] for k in jwks["keys"]}


def _housekeeper(harness: Harness) -> Housekeeper:
    """What every server process runs in the background (its rounds, called here at once)."""
    state = harness.state
    return Housekeeper(state.settings, state.database, state.keys, harness.clock)


async def test_keys_rotate_every_30_days_by_default_with_no_operator_action(
    harness: Harness,
) -> None:
    settings = harness.state.settings
    assert settings.key_rotation_interval == 30 * DAY
    await harness.create_user()
    first = await _signing_kid(harness)
    keeper = _housekeeper(harness)

    harness.clock.advance(30 * DAY - 60)
    await keeper.rotate_once()
    assert await _count(harness, SigningKey) == 1  # not due yet

    harness.clock.advance(60)
    await keeper.rotate_once()
    await keeper.rotate_once()  # a second look (or another process) finds a fresh key
    assert await _count(harness, SigningKey) == 2
    [second] = await _published(harness) - {first}
    # Published ahead: verifiers' caches learn the new key before any token carries it.
    assert await _signing_kid(harness) == first
    harness.clock.advance(settings.publish_ahead)
    assert await _signing_kid(harness) == second
    # The old key stays published while tokens it signed may still be valid, then goes.
    assert await _published(harness) == {first, second}
    harness.clock.advance(settings.access_token_horizon.total_seconds())
    assert await _published(harness) == {second}

    # And again 30 days after the second key was made.
    harness.clock.advance(30 * DAY - settings.publish_ahead)
    await keeper.rotate_once()
    assert await _count(harness, SigningKey) == 3
    async with harness.state.database.read() as db:
        actors = (await db.execute(select(AuditEvent.actor))).scalars().all()
    assert actors.count("scheduler") == 2


async def test_a_process_starting_after_the_key_came_due_rotates_it_at_once(
    harness: Harness, settings: Settings
) -> None:
    harness.clock.advance(31 * DAY)  # every process was down meanwhile, say
    restarted = create_app(settings, harness.clock)
    async with restarted.router.lifespan_context(restarted):
        assert await _count(harness, SigningKey) == 2
    # The process that was already running notices next; the key is fresh, so it does nothing.
    await _housekeeper(harness).rotate_once()
    assert await _count(harness, SigningKey) == 2


@pytest.mark.parametrize("settings_overrides", [{"key_rotation_interval": 0}])
async def test_rotation_can_be_turned_off(harness: Harness) -> None:
    harness.clock.advance(400 * DAY)
    restarted = create_app(harness.state.settings, harness.clock)
    async with restarted.router.lifespan_context(restarted):
        pass
    assert await _count(harness, SigningKey) == 1


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


async def test_prune_deletes_expired_passkey_challenges_only(harness: Harness) -> None:
    from authsvc.services.maintenance import prune

    for _ in range(3):  # abandoned passkey sign-ins
        assert (await harness.client.post("/auth/passkeys/login/options")).status_code == 200
    harness.clock.advance(harness.state.settings.passkey_challenge_ttl + 1)
    assert (await harness.client.post("/auth/passkeys/login/options")).status_code == 200
    report = await prune(harness.state.database, harness.state.keys, harness.clock.now(), 2)
    assert report.passkey_challenges == 3
    assert await _count(harness, PasskeyChallenge) == 1


async def test_scheduled_rotation_goes_on_during_a_kek_rotation(harness: Harness) -> None:
    """With a new KEK and the old one as previous (a rolling restart under way), the scheduler
    still rotates: the key goes under the old KEK, which processes not yet restarted have."""
    state = harness.state
    old = TEST_KEK
    rotating = state.settings.model_copy(
        update={
            "key_encryption_key": SecretStr(new_kek()),
            "previous_key_encryption_keys": SecretStr(old),
        }
    )
    keys = KeyService(rotating, load_secrets(rotating))
    await harness.create_user()
    harness.clock.advance(31 * DAY)
    await Housekeeper(rotating, state.database, keys, harness.clock).rotate_once()
    async with state.database.read() as db:
        rows = (await db.execute(select(SigningKey).order_by(SigningKey.created_at))).scalars()
        blobs = [row.private_key_encrypted for row in rows]
    assert len(blobs) == 2
    assert KeyEncryptionKeys(old).index_of(blobs[-1]) == 0  # the old KEK alone reads it
