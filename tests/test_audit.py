"""The audit trail: each action writes its event in its own transaction; failures too."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from authsvc.cli import parse_since
from authsvc.services import audit
from authsvc.state import build_state
from authsvc.store.models import AuditEvent, Session
from tests.conftest import PASSWORD, TEST_KEK, Harness, make_settings
from tests.live import cli

pytestmark = pytest.mark.anyio


async def _events(harness: Harness) -> list[AuditEvent]:
    async with harness.state.database.read() as db:
        return list(await audit.find(db, limit=1000))[::-1]  # oldest first


async def _count(harness: Harness, model: type) -> int:
    async with harness.state.database.read() as db:
        return int((await db.execute(select(func.count()).select_from(model))).scalar_one())


async def test_login_success_and_each_failure_are_recorded(harness: Harness) -> None:
    user_id = await harness.create_user("alice")
    await harness.login()
    wrong = await harness.client.post(
        "/auth/login", json={"username": "alice", "password": "not the password"}
    )
    unknown = await harness.client.post(
        "/auth/login", json={"username": "mallory", "password": "a typed-in password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    async with harness.state.database.transaction() as db:
        await harness.state.users.set_active(db, "alice", False, harness.clock.now())
    disabled = await harness.client.post(
        "/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    assert disabled.status_code == 401
    # The client cannot tell the three failures apart...
    assert wrong.json() == unknown.json() == disabled.json()

    events = await _events(harness)
    logins = [e for e in events if e.event.startswith("login")]
    assert [(e.event, (e.details or {}).get("reason")) for e in logins] == [
        ("login_succeeded", None),
        ("login_failed", "bad_password"),
        ("login_failed", "unknown_user"),
        ("login_failed", "disabled"),
    ]
    # ...the trail can, and knows who and from where, but never keeps an unknown name.
    assert logins[0].user_id == uuid.UUID(user_id) and logins[0].session_id is not None
    assert all(e.ip == "203.0.113.7" for e in logins)
    assert logins[2].username is None and logins[2].user_id is None
    assert logins[3].user_id == uuid.UUID(user_id)
    assert [e.event for e in events] == [
        "user_created",
        "login_succeeded",
        "login_failed",
        "login_failed",
        "user_disabled",
        "login_failed",
    ]
    # A failed login leaves its audit row and nothing else: one session, from the success.
    assert await _count(harness, Session) == 1


async def test_reuse_is_recorded_with_the_session_and_both_addresses(harness: Harness) -> None:
    await harness.create_user()
    first = await harness.login()
    second = (await harness.refresh(first["refresh_token"])).json()
    assert (await harness.refresh(second["refresh_token"])).status_code == 200
    harness.clock.advance(60)
    reused = await harness.client.post(
        "/auth/refresh",
        json={"refresh_token": first["refresh_token"]},
    )
    assert reused.json()["error"] == "refresh_token_reused"
    [event] = [e for e in await _events(harness) if e.event == "refresh_reuse_detected"]
    async with harness.state.database.read() as db:
        session = await db.get(Session, event.session_id)
    # Committed together with the revocation, although the request failed.
    assert session is not None and session.revoked_reason == "refresh_token_reused"
    assert event.username == "alice"
    assert event.details is not None
    assert event.details["session_ip"] == "203.0.113.7"
    assert event.details["reused_from_ip"] == "203.0.113.7"
    assert event.details["token_first_used_at"]


async def test_logout_password_change_and_key_rotation_are_recorded(harness: Harness) -> None:
    await harness.create_user()
    tokens = await harness.login()
    out = await harness.client.post(
        "/auth/logout",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        json={"scope": "global"},
    )
    assert out.status_code == 204
    now = harness.clock.now()
    async with harness.state.database.transaction() as db:
        await harness.state.users.set_password(db, "alice", "another password", now, actor="ops")
        await harness.state.users.set_active(db, "alice", True, now)
        await harness.state.keys.rotate(db, now, actor="cli")
    events = await _events(harness)
    by_kind = {e.event: e for e in events}
    assert by_kind["logout"].details == {"scope": "global", "sessions_revoked": 1}
    assert by_kind["logout"].ip == "203.0.113.7"
    assert by_kind["password_changed"].actor == "ops"
    assert by_kind["user_enabled"].username == "alice"
    assert by_kind["key_rotated"].details is not None
    assert by_kind["key_rotated"].details["kid"] in {k.kid for k in harness.state.keys.ring.keys}


async def test_a_failed_action_leaves_no_audit_row(harness: Harness) -> None:
    await harness.create_user()
    before = await _count(harness, AuditEvent)
    with pytest.raises(ZeroDivisionError):
        async with harness.state.database.transaction() as db:
            await harness.state.users.set_active(db, "alice", False, harness.clock.now())
            _ = 1 / 0
    assert await _count(harness, AuditEvent) == before
    # A bad refresh token is not an audit event (metrics count it), and writes nothing.
    bad = await harness.refresh("rt_" + "A" * 43)
    assert bad.status_code == 401
    assert await _count(harness, AuditEvent) == before


def test_since_takes_an_iso_time_or_a_duration() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-11-01T00:00:00", now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T01:00:00+01:00", now) == datetime(2026, 11, 1, tzinfo=UTC)


async def _seed(url: str, data_dir: Path) -> None:
    # Bob's story through the services, one event of it two days ago.
    state = build_state(make_settings(url, data_dir))
    now = datetime.now(UTC)
    try:
        async with state.database.transaction() as db:
            await state.users.create(db, "bob", "long enough pw", now - timedelta(days=2))
            await state.users.set_active(db, "bob", False, now, actor="ops")
    finally:
        await state.database.dispose()


@pytest.mark.slow
def test_audit_command_filters_by_user_since_and_limit(tmp_path: Path) -> None:
    env = {"AUTHSVC_KEY_ENCRYPTION_KEY": TEST_KEK}
    made = cli(
        tmp_path, "users", "create", "alice", "--password-stdin", stdin="long enough pw\n", **env
    )
    assert made.returncode == 0, made.stderr
    asyncio.run(_seed(f"sqlite:///{tmp_path / '.authsvc' / 'authsvc.db'}", tmp_path / ".authsvc"))

    everything = cli(tmp_path, "audit", **env)
    assert everything.returncode == 0, everything.stderr
    header, *rows = everything.stdout.splitlines()
    assert header.split("\t")[:3] == ["AT", "EVENT", "USER"]
    lines = [line.split("\t") for line in rows]
    assert [(f[1], f[2], f[5]) for f in lines] == [
        ("user_disabled", "bob", "ops"),
        ("user_created", "alice", "cli"),
        ("user_created", "bob", "-"),
    ]
    bob = cli(tmp_path, "audit", "--user", "BOB", "--since", "1d", **env).stdout.splitlines()
    assert [line.split("\t")[1] for line in bob[1:]] == ["user_disabled"]
    assert len(cli(tmp_path, "audit", "--limit", "1", **env).stdout.splitlines()) == 2
    assert cli(tmp_path, "audit", "--since", "yesterday", **env).returncode == 2


async def _audit_count(harness: Harness) -> int:
    from authsvc.store.models import AuditEvent

    async with harness.state.database.read() as db:
        return int((await db.execute(select(func.count()).select_from(AuditEvent))).scalar_one())


@pytest.mark.parametrize("settings_overrides", [{"audit_retention_days": 30}])
async def test_prune_drops_audit_events_past_retention(harness: Harness) -> None:
    from authsvc.services.maintenance import prune

    await harness.create_user()
    await harness.login()
    old = await _audit_count(harness)
    assert old >= 1
    harness.clock.advance(31 * 86400)
    await harness.login()  # a fresh event, inside the retention window
    report = await prune(harness.state.database, harness.state.keys, harness.clock.now())
    assert report.audit_events == old
    assert await _audit_count(harness) == 1


@pytest.mark.parametrize("settings_overrides", [{"audit_retention_days": 0}])
async def test_zero_audit_retention_keeps_everything(harness: Harness) -> None:
    from authsvc.services.maintenance import prune

    await harness.create_user()
    await harness.login()
    before = await _audit_count(harness)
    harness.clock.advance(10 * 365 * 86400)
    report = await prune(harness.state.database, harness.state.keys, harness.clock.now())
    assert report.audit_events == 0
    assert await _audit_count(harness) == before
