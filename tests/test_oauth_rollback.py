"""A failed /oauth request is rolled back whole, like a failed /auth request, except for the
writes that must survive it: the audit row of a failed login, the session a reused refresh
token or authorization code revokes (api/deps.py write_scope)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from authsvc.services import audit
from authsvc.store.models import AuditEvent, AuthorizationCode, RefreshToken, Session
from authsvc.store.repositories import SigningKeyRepository
from tests.conftest import PASSWORD, Harness
from tests.test_authorization_code import Flow, code_for, exchange, flow, pkce
from tests.test_oauth import make_client, password_grant, token

pytestmark = pytest.mark.anyio

__all__ = ["flow"]  # the code flow's fixture, used by the tests below


async def _count(harness: Harness | Flow, model: type) -> int:
    async with harness.state.database.read() as db:
        return int((await db.execute(select(func.count()).select_from(model))).scalar_one())


async def _events(harness: Harness | Flow) -> list[AuditEvent]:
    async with harness.state.database.read() as db:
        return list(await audit.find(db, limit=1000))[::-1]  # oldest first


async def _without_signing_key(harness: Harness | Flow) -> None:
    """Retire every signing key, and move past the key ring's reload interval so the next
    request sees it: issuing tokens is then a 503, after the grant has written its session."""
    async with harness.state.database.transaction() as db:
        await SigningKeyRepository(db).retire_active(harness.clock.now())
    harness.clock.advance(harness.state.settings.key_reload_interval + 1)


async def _restore_signing_key(harness: Harness | Flow) -> None:
    async with harness.state.database.transaction() as db:
        await harness.state.keys.ensure_signing_key(db, harness.clock.now())


def _refresh_form(client_id: str, refresh_token: str) -> dict[str, Any]:
    return {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}


async def test_failed_password_grant_keeps_its_audit_row_and_nothing_else(
    harness: Harness,
) -> None:
    await harness.create_user()
    client_id, _ = await make_client(harness)
    before = len(await _events(harness))
    wrong = await token(
        harness, grant_type="password", username="alice", password="wrong", client_id=client_id
    )
    assert wrong.status_code == 400, wrong.text
    assert wrong.json() == {
        "error": "invalid_grant",
        "error_description": wrong.json()["error_description"],
    }
    assert wrong.headers["cache-control"] == "no-store"
    added = (await _events(harness))[before:]
    assert [(e.event, (e.details or {}).get("reason")) for e in added] == [
        ("login_failed", "bad_password")
    ]
    assert added[0].ip == "203.0.113.7"
    assert await _count(harness, Session) == 0
    assert await _count(harness, RefreshToken) == 0


async def test_reused_refresh_token_revokes_the_family_and_that_sticks(harness: Harness) -> None:
    harness.state.settings.refresh_reuse_grace_seconds = 0
    await harness.create_user()
    client_id, _ = await make_client(harness)
    first = await password_grant(harness, client_id)
    second = await token(harness, **_refresh_form(client_id, first["refresh_token"]))
    assert second.status_code == 200, second.text
    reused = await token(harness, **_refresh_form(client_id, first["refresh_token"]))
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    async with harness.state.database.read() as db:
        session = (await db.execute(select(Session))).scalar_one()
    assert session.revoked_at is not None
    assert [e.event for e in await _events(harness)][-1] == audit.REFRESH_REUSE_DETECTED
    # The successor went with its family.
    later = await token(harness, **_refresh_form(client_id, second.json()["refresh_token"]))
    assert later.json()["error"] == "invalid_grant"
    assert (await harness.me(second.json()["access_token"])).status_code == 401


async def test_reused_code_revokes_its_session_and_that_sticks(flow: Flow) -> None:
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    code = await code_for(flow, client_id, challenge)
    first = await exchange(flow, client_id, code, verifier)
    assert first.status_code == 200, first.text
    second = await exchange(flow, client_id, code, verifier)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    async with flow.state.database.read() as db:
        row = (await db.execute(select(AuthorizationCode))).scalar_one()
        session = await db.get(Session, row.session_id)
    assert session is not None and session.revoked_at is not None
    assert audit.AUTHORIZATION_CODE_REUSED in [e.event for e in await _events(flow)]


async def test_password_grant_failing_after_its_writes_leaves_nothing(harness: Harness) -> None:
    """The password is right and the session is written, then no key can sign: a 503 that
    must not leave a session nobody holds tokens for, nor a login that did not happen."""
    await harness.create_user()
    client_id, _ = await make_client(harness)
    await _without_signing_key(harness)
    before = len(await _events(harness))
    failed = await token(
        harness, grant_type="password", username="alice", password=PASSWORD, client_id=client_id
    )
    assert failed.status_code == 503, failed.text
    assert failed.json()["error"] == "temporarily_unavailable"
    assert failed.headers["retry-after"]
    assert await _count(harness, Session) == 0
    assert await _count(harness, RefreshToken) == 0
    assert (await _events(harness))[before:] == []


async def test_code_exchange_failing_after_its_writes_does_not_spend_the_code(
    flow: Flow,
) -> None:
    """The code is spent and its session opened, then no key can sign: the 503 rolls all of it
    back, so the client's retry succeeds instead of looking like a stolen code's replay."""
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    code = await code_for(flow, client_id, challenge)
    sessions = await _count(flow, Session)  # the browser's sign-in, if it keeps one
    await _without_signing_key(flow)
    failed = await exchange(flow, client_id, code, verifier)
    assert failed.status_code == 503, failed.text
    assert failed.json()["error"] == "temporarily_unavailable"
    async with flow.state.database.read() as db:
        row = (await db.execute(select(AuthorizationCode))).scalar_one()
    assert row.used_at is None and row.session_id is None
    assert await _count(flow, Session) == sessions
    await _restore_signing_key(flow)
    retried = await exchange(flow, client_id, code, verifier)
    assert retried.status_code == 200, retried.text
    assert await _count(flow, Session) == sessions + 1
