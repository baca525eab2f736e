"""GET /auth/revocations: every revocation path reaches the feed; cursors, expiry, pruning."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import delete, event

from authsvc.services import revocations
from authsvc.services.maintenance import prune
from authsvc.services.revocations import parse_cursor, retention
from authsvc.store.models import FeedState
from authsvc.store.revocations import RevocationEventRepository, poll_values
from tests.conftest import Harness
from tests.live import cli

pytestmark = pytest.mark.anyio


async def _feed(harness: Harness, since: str | None = None) -> dict[str, Any]:
    params = {"since": since} if since is not None else {}
    response = await harness.client.get("/auth/revocations", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "public, max-age=1"
    body: dict[str, Any] = response.json()
    return body


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _sids(body: dict[str, Any]) -> set[str]:
    return {e["sid"] for e in body["revoked_sids"]}


def _jtis(body: dict[str, Any]) -> set[str]:
    return {e["jti"] for e in body["revoked_jtis"]}


async def test_feed_is_empty_and_public_before_any_revocation(harness: Harness) -> None:
    body = await _feed(harness)
    assert body["revoked_jtis"] == [] and body["revoked_sids"] == []
    assert body["poll_after"] == 5
    again = await _feed(harness, body["cursor"])
    assert again["cursor"] == body["cursor"]


async def test_logout_puts_jti_and_sid_on_the_feed_with_their_expiry(harness: Harness) -> None:
    await harness.create_user()
    tokens = await harness.login()
    start = await _feed(harness)
    await harness.client.post(
        "/auth/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    body = await _feed(harness, start["cursor"])
    claims = _claims(tokens["access_token"])
    assert body["revoked_jtis"] == [{"jti": claims["jti"], "exp": claims["exp"]}]
    now = int(harness.clock.now().timestamp())
    # No token of the revoked session can outlive revocation + access TTL + leeway.
    assert body["revoked_sids"] == [{"sid": claims["sid"], "exp": now + 300 + 5}]
    # Nothing changed since: an empty answer, same cursor.
    quiet = await _feed(harness, body["cursor"])
    assert quiet["revoked_jtis"] == [] and quiet["revoked_sids"] == []
    assert quiet["cursor"] == body["cursor"]
    # A first poll (no cursor) sees every live entry.
    assert _jtis(await _feed(harness)) == {claims["jti"]}


async def test_logout_scopes_others_and_global_reach_the_feed(harness: Harness) -> None:
    await harness.create_user()
    a, b, c = await harness.login(), await harness.login(), await harness.login()
    await harness.client.post(
        "/auth/logout",
        json={"scope": "others"},
        headers={"Authorization": f"Bearer {a['access_token']}"},
    )
    body = await _feed(harness)
    assert _sids(body) == {_claims(t["access_token"])["sid"] for t in (b, c)}
    assert _jtis(body) == set()  # the caller's session stays, so its token is not denied
    await harness.client.post(
        "/auth/logout", json={"scope": "global", "refresh_token": a["refresh_token"]}
    )
    after = await _feed(harness, body["cursor"])
    assert _sids(after) == {_claims(a["access_token"])["sid"]}


async def test_refresh_reuse_revocation_reaches_the_feed_although_the_request_fails(
    harness: Harness,
) -> None:
    await harness.create_user()
    tokens = await harness.login()
    assert (await harness.refresh(tokens["refresh_token"])).status_code == 200
    harness.clock.advance(11)  # past the grace window: this is theft
    reused = await harness.refresh(tokens["refresh_token"])
    assert reused.json()["error"] == "refresh_token_reused"
    assert _sids(await _feed(harness)) == {_claims(tokens["access_token"])["sid"]}


async def test_disable_and_set_password_reach_the_feed(harness: Harness) -> None:
    await harness.create_user()
    await harness.create_user("bob")
    alice, bob = await harness.login(), await harness.login("bob")
    now = harness.clock.now()
    async with harness.state.database.transaction() as db:
        await harness.state.users.set_active(db, "alice", False, now)
    body = await _feed(harness)
    assert _sids(body) == {_claims(alice["access_token"])["sid"]}
    async with harness.state.database.transaction() as db:
        await harness.state.users.set_password(db, "bob", "a brand new password", now)
    assert _sids(await _feed(harness, body["cursor"])) == {_claims(bob["access_token"])["sid"]}


async def test_a_failed_logout_writes_nothing_to_the_feed(harness: Harness) -> None:
    await harness.create_user()
    a, b = await harness.login(), await harness.login()
    response = await harness.client.post(
        "/auth/logout",
        json={"refresh_token": b["refresh_token"]},
        headers={"Authorization": f"Bearer {a['access_token']}"},
    )
    assert response.status_code == 400
    body = await _feed(harness)
    assert body["revoked_sids"] == []
    cursor = parse_cursor(body["cursor"])
    assert cursor is not None and cursor.position == 0


async def test_entries_leave_the_feed_after_expiry_and_prune_deletes_them(
    harness: Harness,
) -> None:
    await harness.create_user()
    tokens = await harness.login()
    await harness.client.post(
        "/auth/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    live = await _feed(harness)
    assert len(live["revoked_jtis"]) == 1 and len(live["revoked_sids"]) == 1
    harness.clock.advance(300 + 5)  # the jti's exp + leeway has passed, the sid's not yet
    mid = await _feed(harness)
    assert mid["revoked_jtis"] == [] and len(mid["revoked_sids"]) == 1
    harness.clock.advance(5)
    gone = await _feed(harness)
    assert gone["revoked_jtis"] == [] and gone["revoked_sids"] == []
    # The cursor still moves past expired rows, so pollers do not rescan them.
    assert gone["cursor"] == live["cursor"]
    report = await prune(harness.state.database, harness.state.keys, harness.clock.now())
    assert report.revocation_events == 2
    # After pruning, ids are never reused (SQLite AUTOINCREMENT, PostgreSQL identity).
    again = await harness.login()
    await harness.client.post(
        "/auth/logout", headers={"Authorization": f"Bearer {again['access_token']}"}
    )
    fresh = await _feed(harness, live["cursor"])
    assert _jtis(fresh) == {_claims(again["access_token"])["jti"]}


async def test_concurrent_logouts_are_all_seen_by_a_cursor(harness: Harness) -> None:
    await harness.create_user()
    sessions = [await harness.login() for _ in range(6)]
    seen: set[str] = set()
    cursor = (await _feed(harness))["cursor"]

    async def poller() -> None:
        nonlocal cursor
        for _ in range(20):
            body = await _feed(harness, cursor)
            seen.update(_sids(body))
            cursor = body["cursor"]
            await asyncio.sleep(0)

    async def logout(tokens: dict[str, Any]) -> None:
        response = await harness.client.post(
            "/auth/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        assert response.status_code == 204

    await asyncio.gather(poller(), *(logout(t) for t in sessions))
    seen.update(_sids(await _feed(harness, cursor)))
    assert seen == {_claims(t["access_token"])["sid"] for t in sessions}


@pytest.mark.parametrize("cursor", ["nope", "c-1", "c" + "9" * 25, "c" + "9" * 19, "1"])
async def test_malformed_cursor_is_400(harness: Harness, cursor: str) -> None:
    response = await harness.client.get("/auth/revocations", params={"since": cursor})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def _logout(harness: Harness, tokens: dict[str, Any]) -> None:
    response = await harness.client.post(
        "/auth/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status_code == 204


async def test_a_cursor_from_before_a_feed_reset_gets_a_resync(harness: Harness) -> None:
    await harness.create_user()
    first, second = await harness.login(), await harness.login()
    await _logout(harness, first)
    seen = await _feed(harness)
    assert seen["resync"] is False
    async with harness.state.database.transaction() as db:
        await revocations.reset(db, harness.clock.now())
    again = await _feed(harness, seen["cursor"])
    # Every live entry again, from the start, and a cursor of the new epoch.
    assert again["resync"] is True
    assert _jtis(again) == _jtis(seen) and _sids(again) == _sids(seen)
    assert again["cursor"] != seen["cursor"]
    await _logout(harness, second)
    after = await _feed(harness, again["cursor"])
    assert after["resync"] is False
    assert _sids(after) == {_claims(second["access_token"])["sid"]}


async def test_a_cursor_that_prune_has_passed_gets_a_resync(harness: Harness) -> None:
    await harness.create_user()
    first, second = await harness.login(), await harness.login()
    await _logout(harness, first)
    lagging = await _feed(harness)
    await _logout(harness, second)
    current = await _feed(harness, lagging["cursor"])
    harness.clock.advance(300 + 5 + 5 + 1)  # both logouts' entries are past exp + leeway
    report = await prune(harness.state.database, harness.state.keys, harness.clock.now())
    assert report.revocation_events == 4
    third = await harness.login()
    await _logout(harness, third)
    # The poller that saw every pruned event follows on; the one that missed some resyncs.
    followed = await _feed(harness, current["cursor"])
    assert followed["resync"] is False
    assert _sids(followed) == {_claims(third["access_token"])["sid"]}
    resynced = await _feed(harness, lagging["cursor"])
    assert resynced["resync"] is True
    assert _sids(resynced) == {_claims(third["access_token"])["sid"]}


async def test_a_cursor_of_the_old_format_gets_a_resync(harness: Harness) -> None:
    await harness.create_user()
    await _logout(harness, await harness.login())
    body = await _feed(harness, "c2")
    assert body["resync"] is True and len(body["revoked_sids"]) == 1
    assert (await _feed(harness, body["cursor"]))["resync"] is False


def test_feed_reset_through_the_cli(tmp_path: Path) -> None:
    first = cli(tmp_path, "feed", "reset")
    assert first.returncode == 0, first.stderr
    match = re.fullmatch(r"feed epoch ([0-9a-f]{16}) \(was ([0-9a-f]{16})\); .*\n", first.stdout)
    assert match is not None, first.stdout
    second = cli(tmp_path, "feed", "reset")
    assert second.returncode == 0, second.stderr
    assert f"(was {match.group(1)})" in second.stdout


async def test_a_lost_feed_state_row_resyncs_once_until_feed_reset_restores_it(
    harness: Harness,
) -> None:
    await harness.create_user()
    first, second = await harness.login(), await harness.login()
    await _logout(harness, first)
    seen = await _feed(harness)
    async with harness.state.database.transaction() as db:
        await db.execute(delete(FeedState))  # what a careless hand-made cleanup does
    again = await _feed(harness, seen["cursor"])
    assert again["resync"] is True and _sids(again) == _sids(seen)
    await _logout(harness, second)
    after = await _feed(harness, again["cursor"])
    assert after["resync"] is False
    assert _sids(after) == {_claims(second["access_token"])["sid"]}
    async with harness.state.database.transaction() as db:
        old, new = await revocations.reset(db, harness.clock.now())
    assert old is None and re.fullmatch(r"[0-9a-f]{16}", new)
    assert (await _feed(harness, after["cursor"]))["resync"] is True


@pytest.mark.parametrize("epoch", ["c" * 16, "0" * 16, "cafe0123456789ab"])
def test_cursors_round_trip_whatever_the_epoch_looks_like(epoch: str) -> None:
    cursor = revocations.Cursor(epoch, 10**18 - 1, "0badc0de")
    assert parse_cursor(revocations.format_cursor(cursor)) == cursor
    assert parse_cursor("c42") == revocations.Cursor("", 42, "")


async def test_a_poller_starts_at_the_first_live_event_not_at_the_oldest(harness: Harness) -> None:
    """A new verifier (or one far behind) of a feed of mostly expired events reads one page of
    live entries, not every expired event before them."""
    await harness.create_user()
    for _ in range(3):
        await _logout(harness, await harness.login())
    harness.clock.advance(3600)  # those six events have expired
    await _logout(harness, await harness.login())
    live_after = harness.clock.now() - retention(harness.state.settings)
    async with harness.state.database.read() as db:
        page = (await RevocationEventRepository(db).poll(poll_values(0, 1000, live_after))).page
    assert page.scanned == 2 and len(page.events) == 2  # the live jti and sid only
    body = await _feed(harness)
    assert len(body["revoked_jtis"]) == 1 and len(body["revoked_sids"]) == 1
    # With nothing live, the range starts at the newest event: the cursor catches up at once.
    harness.clock.advance(3600)
    async with harness.state.database.read() as db:
        polled = await RevocationEventRepository(db).poll(poll_values(0, 1000, harness.clock.now()))
    empty = polled.page
    assert empty.scanned == 1 and empty.last_id == page.last_id


async def test_a_poll_is_one_statement_and_on_postgresql_one_round_trip(harness: Harness) -> None:
    """The hottest read: the feed's identity and the page in one statement, so a poll is one
    round trip; on PostgreSQL it runs on the fast lane, outside the request's session (no
    BEGIN, no ROLLBACK). A resync's first page is a second statement."""
    await harness.create_user()
    await _logout(harness, await harness.login())
    first = await _feed(harness)
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.strip().upper() != "BEGIN":  # SQLite's own, for the read transaction
            sent.append(statement)

    engine = harness.state.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        polled = [await _feed(harness), await _feed(harness, first["cursor"])]
        through_session = len(sent)
        sent.clear()
        settings, now = harness.state.settings, harness.clock.now()
        async with harness.state.database.read() as db:
            await revocations.changes(db, None, settings, None, now)
            await revocations.changes(db, None, settings, first["cursor"], now)
        assert len(sent) == 2
        sent.clear()
        async with harness.state.database.read() as db:
            stale = "f" * 16 + first["cursor"][16:]
            assert (await revocations.changes(db, None, settings, stale, now)).resync
        assert len(sent) == 2
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert polled[0]["cursor"] == polled[1]["cursor"] == first["cursor"]
    assert through_session == (0 if harness.state.database.fast_lane is not None else 2)
