"""POST /auth/refresh: rotation, reuse detection, the grace window, races, lifetimes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import jwt
import pytest
from sqlalchemy import func, select

from authsvc.store.models import RefreshToken, Session
from tests.conftest import Harness

pytestmark = pytest.mark.anyio


async def _session_of(harness: Harness, access_token: str) -> Session:
    sid = jwt.decode(access_token, options={"verify_signature": False})["sid"]
    async with harness.state.database.read() as db:
        session = await db.get(Session, uuid.UUID(sid))
    assert session is not None
    return session


async def _token_rows(harness: Harness, session_id: uuid.UUID) -> int:
    async with harness.state.database.read() as db:
        result = await db.execute(
            select(func.count())
            .select_from(RefreshToken)
            .where(RefreshToken.session_id == session_id)
        )
        return int(result.scalar_one())


async def test_refresh_rotates_the_token(harness: Harness) -> None:
    await harness.create_user()
    first = await harness.login()
    harness.clock.advance(60)
    response = await harness.refresh(first["refresh_token"])
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert (await harness.me(second["access_token"])).status_code == 200
    # The new access token belongs to the same session.
    a = jwt.decode(first["access_token"], options={"verify_signature": False})
    b = jwt.decode(second["access_token"], options={"verify_signature": False})
    assert a["sid"] == b["sid"] and a["jti"] != b["jti"]


async def test_a_chain_of_refreshes_works(harness: Harness) -> None:
    await harness.create_user()
    token = (await harness.login())["refresh_token"]
    for _ in range(5):
        harness.clock.advance(30)
        response = await harness.refresh(token)
        assert response.status_code == 200
        token = response.json()["refresh_token"]


async def test_reused_refresh_token_revokes_family(harness: Harness) -> None:
    await harness.create_user()
    first = await harness.login()
    second = (await harness.refresh(first["refresh_token"])).json()
    harness.clock.advance(11)  # past the grace window
    reused = await harness.refresh(first["refresh_token"])
    assert reused.status_code == 401
    assert reused.json()["error"] == "refresh_token_reused"
    # The revocation was committed although that request failed:
    session = await _session_of(harness, first["access_token"])
    assert session.revoked_at is not None
    assert session.revoked_reason == "refresh_token_reused"
    # ... so the thief's and the victim's latest tokens are dead, access tokens included.
    assert (await harness.refresh(second["refresh_token"])).json()["error"] == (
        "invalid_refresh_token"
    )
    assert (await harness.me(second["access_token"])).status_code == 401
    assert (await harness.me(first["access_token"])).status_code == 401


async def test_a_spent_token_of_an_ended_session_is_invalid_not_reuse(harness: Harness) -> None:
    # Only a token still in force but spent counts as reuse: once its session is revoked, a
    # spent token is merely invalid, with no second revocation or audit row.
    await harness.create_user()
    first = await harness.login()
    assert (await harness.refresh(first["refresh_token"])).status_code == 200
    logout = await harness.client.post(
        "/auth/logout", headers={"Authorization": f"Bearer {first['access_token']}"}
    )
    assert logout.status_code == 204
    harness.clock.advance(11)
    response = await harness.refresh(first["refresh_token"])
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_refresh_token"
    session = await _session_of(harness, first["access_token"])
    assert session.revoked_reason == "logout_local"


async def test_reuse_after_successor_was_used_is_theft_even_inside_grace(
    harness: Harness,
) -> None:
    await harness.create_user()
    first = await harness.login()
    second = (await harness.refresh(first["refresh_token"])).json()
    assert (await harness.refresh(second["refresh_token"])).status_code == 200
    reused = await harness.refresh(first["refresh_token"])
    assert reused.json()["error"] == "refresh_token_reused"


async def test_retry_inside_grace_window_gets_the_same_successor(harness: Harness) -> None:
    await harness.create_user()
    first = await harness.login()
    second = (await harness.refresh(first["refresh_token"])).json()
    harness.clock.advance(9)
    retry = await harness.refresh(first["refresh_token"])
    assert retry.status_code == 200
    assert retry.json()["refresh_token"] == second["refresh_token"]
    assert retry.json()["access_token"] != second["access_token"]
    session = await _session_of(harness, first["access_token"])
    assert session.revoked_at is None
    assert await _token_rows(harness, session.id) == 2  # no fork
    # The successor still works once, and the chain goes on.
    assert (await harness.refresh(second["refresh_token"])).status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"refresh_reuse_grace_seconds": 0}])
async def test_grace_zero_treats_any_retry_as_reuse(harness: Harness) -> None:
    await harness.create_user()
    first = await harness.login()
    assert (await harness.refresh(first["refresh_token"])).status_code == 200
    retry = await harness.refresh(first["refresh_token"])
    assert retry.json()["error"] == "refresh_token_reused"


async def test_concurrent_refreshes_rotate_exactly_once(harness: Harness) -> None:
    await harness.create_user()
    first = await harness.login()
    responses = await asyncio.gather(*(harness.refresh(first["refresh_token"]) for _ in range(12)))
    assert {r.status_code for r in responses} == {200}
    # Every tab got the same successor: one rotation, no fork.
    assert len({r.json()["refresh_token"] for r in responses}) == 1
    session = await _session_of(harness, first["access_token"])
    assert await _token_rows(harness, session.id) == 2


@pytest.mark.parametrize("settings_overrides", [{"refresh_reuse_grace_seconds": 0}])
async def test_concurrent_refreshes_without_grace_have_exactly_one_winner(
    harness: Harness,
) -> None:
    await harness.create_user()
    first = await harness.login()
    responses = await asyncio.gather(*(harness.refresh(first["refresh_token"]) for _ in range(12)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 1
    # The first loser detects reuse and revokes the family; later ones find it revoked.
    errors = [r.json()["error"] for r in responses if r.status_code != 200]
    assert "refresh_token_reused" in errors
    assert set(errors) <= {"refresh_token_reused", "invalid_refresh_token"}
    session = await _session_of(harness, first["access_token"])
    assert await _token_rows(harness, session.id) == 2


@pytest.mark.parametrize(
    "token",
    [
        "",
        "rt_",
        "rt_" + "A" * 43,
        "not-a-token",
        "rt_" + "A" * 42 + "!",
        "x" * 400,
        "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
    ],
)
async def test_unknown_or_malformed_tokens_are_invalid(harness: Harness, token: str) -> None:
    response = await harness.refresh(token)
    assert response.status_code in (400, 401)
    expected = "invalid_request" if token == "" else "invalid_refresh_token"
    assert response.json()["error"] == expected


async def test_expired_refresh_token_is_invalid(harness: Harness) -> None:
    await harness.create_user()
    first = await harness.login()
    harness.clock.advance(14 * 86400 + 1)
    assert (await harness.refresh(first["refresh_token"])).json()["error"] == (
        "invalid_refresh_token"
    )


@pytest.mark.parametrize(
    "settings_overrides",
    [{"session_max_age": 3600, "refresh_token_ttl": 1800, "access_token_ttl": 60}],
)
async def test_rotation_never_extends_the_session(harness: Harness) -> None:
    await harness.create_user()
    token = (await harness.login())["refresh_token"]
    harness.clock.advance(1700)
    body: dict[str, Any] = (await harness.refresh(token)).json()
    assert body["refresh_expires_in"] == 1800
    harness.clock.advance(1700)
    body = (await harness.refresh(body["refresh_token"])).json()
    assert body["refresh_expires_in"] == 3600 - 3400  # capped by the session's absolute end
    harness.clock.advance(201)
    response = await harness.refresh(body["refresh_token"])
    assert response.json()["error"] == "invalid_refresh_token"


async def test_disabled_user_cannot_refresh(harness: Harness) -> None:
    await harness.create_user()
    first = await harness.login()
    async with harness.state.database.transaction() as db:
        await harness.state.users.set_active(db, "alice", False, harness.clock.now())
    assert (await harness.refresh(first["refresh_token"])).status_code == 401
    assert (await harness.me(first["access_token"])).status_code == 401


async def test_refresh_tokens_are_stored_only_as_digests(harness: Harness) -> None:
    await harness.create_user()
    first = await harness.login()
    second = (await harness.refresh(first["refresh_token"])).json()
    async with harness.state.database.read() as db:
        digests = (await db.execute(select(RefreshToken.digest))).scalars().all()
    for token in (first["refresh_token"], second["refresh_token"]):
        assert all(token.encode() not in d and token[3:].encode() not in d for d in digests)
    assert all(len(d) == 32 for d in digests)
