"""Signing keys: first key, rotation with publish-ahead, retirement, other processes."""

from __future__ import annotations

import jwt
import pytest
from sqlalchemy import select

from authsvc.config import Settings
from authsvc.security.keys import decrypt_private_key
from authsvc.state import build_state
from authsvc.store.models import SigningKey
from tests.conftest import Harness

pytestmark = pytest.mark.anyio


async def _kids(harness: Harness) -> list[str]:
    jwks = (await harness.client.get("/.well-known/jwks.json")).json()
    return [k["kid"] for k in jwks["keys"]]


async def _signing_kid(harness: Harness) -> str:
    tokens = await harness.login()
    return str(jwt.get_unverified_header(tokens["access_token"])["kid"])


async def test_private_key_is_encrypted_at_rest(harness: Harness) -> None:
    async with harness.state.database.read() as db:
        row = (await db.execute(select(SigningKey))).scalar_one()
    assert b"PRIVATE KEY" not in row.private_key_encrypted
    assert "d" not in row.public_jwk
    key = decrypt_private_key(row.private_key_encrypted, harness.state.keys.secrets.keks)
    assert key.key_size == 2048


async def test_rotation_publishes_first_then_signs_after_publish_ahead(
    harness: Harness,
) -> None:
    await harness.create_user()
    old_kid = await _signing_kid(harness)
    async with harness.state.database.transaction() as db:
        info = await harness.state.keys.rotate(db, harness.clock.now())
    assert sorted(await _kids(harness)) == sorted([old_kid, info.kid])
    # Published, not yet signing: caches must learn the key before tokens carry it.
    assert await _signing_kid(harness) == old_kid
    harness.clock.advance(299)
    assert await _signing_kid(harness) == old_kid
    harness.clock.advance(1)
    assert await _signing_kid(harness) == info.kid
    # The retired key stays published while tokens it signed can be valid ...
    assert old_kid in await _kids(harness)
    harness.clock.advance(300 + 5)
    # ... and is dropped after that.
    assert await _kids(harness) == [info.kid]


async def test_token_signed_by_retiring_key_still_verifies(harness: Harness) -> None:
    await harness.create_user()
    async with harness.state.database.transaction() as db:
        await harness.state.keys.rotate(db, harness.clock.now())
    harness.clock.advance(250)
    tokens = await harness.login()  # signed by the old key
    harness.clock.advance(100)  # the new key signs now
    assert (await harness.me(tokens["access_token"])).status_code == 200


async def test_rotation_by_another_process_reaches_this_one(
    harness: Harness, settings: Settings
) -> None:
    other = build_state(settings, harness.clock)
    try:
        async with other.database.transaction() as db:
            info = await other.keys.rotate(db, harness.clock.now())
    finally:
        await other.database.dispose()
    harness.clock.advance(settings.key_reload_interval)
    assert info.kid in await _kids(harness)


async def test_ensure_signing_key_is_idempotent(harness: Harness) -> None:
    for _ in range(3):
        async with harness.state.database.transaction() as db:
            await harness.state.keys.ensure_signing_key(db, harness.clock.now())
    assert len(await _kids(harness)) == 1


async def test_keys_list_shows_states(harness: Harness) -> None:
    async with harness.state.database.transaction() as db:
        await harness.state.keys.rotate(db, harness.clock.now())
        infos = await harness.state.keys.list(db, harness.clock.now())
    assert [k.state for k in infos] == ["active", "published"]
