"""The OAuth token endpoint passes the caller's address to the rules it shares with the JSON
API: rate limiting per address and the audit of a reused refresh token."""

from __future__ import annotations

from typing import Any

import pytest

from authsvc.services import audit
from tests.conftest import PASSWORD, Harness
from tests.test_oauth import make_client, token

pytestmark = pytest.mark.anyio

PROXY = "203.0.113.7"  # the harness's TCP peer, trusted so tests pick addresses


async def _grant(harness: Harness, client_id: str) -> str:
    response = await token(
        harness, grant_type="password", username="alice", password=PASSWORD, client_id=client_id
    )
    assert response.status_code == 200, response.text
    refresh_token: str = response.json()["refresh_token"]
    return refresh_token


async def _refresh(harness: Harness, client_id: str, refresh_token: str, ip: str) -> Any:
    return await token(
        harness,
        {"X-Forwarded-For": ip},
        grant_type="refresh_token",
        refresh_token=refresh_token,
        client_id=client_id,
    )


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "rate_limit_enabled": True,
            "trusted_proxies": f"{PROXY}/32",
            "rate_limit_refresh_per_ip": 2,
            "rate_limit_login_per_ip": 100,
            "rate_limit_login_per_username": 100,
        }
    ],
)
async def test_oauth_refresh_is_rate_limited_per_address(harness: Harness) -> None:
    await harness.create_user()
    client_id, _ = await make_client(harness)
    spread = [await _grant(harness, client_id) for _ in range(3)]
    statuses = [
        (await _refresh(harness, client_id, rt, f"198.51.100.{i}")).status_code
        for i, rt in enumerate(spread, start=1)
    ]
    assert statuses == [200, 200, 200]
    one_address = [await _grant(harness, client_id) for _ in range(3)]
    statuses = [
        (await _refresh(harness, client_id, rt, "198.51.100.9")).status_code for rt in one_address
    ]
    assert statuses == [200, 200, 429]


@pytest.mark.parametrize("settings_overrides", [{"trusted_proxies": f"{PROXY}/32"}])
async def test_oauth_refresh_reuse_is_audited_with_the_address(harness: Harness) -> None:
    await harness.create_user()
    client_id, _ = await make_client(harness)
    first = await _grant(harness, client_id)
    second = (await _refresh(harness, client_id, first, "198.51.100.1")).json()
    assert (await _refresh(harness, client_id, second["refresh_token"], "198.51.100.1")).is_success
    harness.clock.advance(60)
    reused = await _refresh(harness, client_id, first, "198.51.100.66")
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    async with harness.state.database.read() as db:
        events = await audit.find(db, limit=100)
    [event] = [e for e in events if e.event == audit.REFRESH_REUSE_DETECTED]
    assert event.ip == "198.51.100.66"
    assert event.details is not None
    assert event.details["reused_from_ip"] == "198.51.100.66"
