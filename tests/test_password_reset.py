"""Password reset by email over HTTP, with the mails read from a real SMTP server.

The abuse cases: asking for a link answers the same (status and body) whether or not the
account exists, and mails only a real one; a link works once, expires after 30 minutes and dies
when a newer one is used; using it revokes every session (the feed hears); per-address and
per-account limits; no reset at all in production without SMTP.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from authsvc.app import create_app
from authsvc.clock import MovableClock
from authsvc.config import Settings
from authsvc.services import audit
from authsvc.services.maintenance import prune
from tests.conftest import PASSWORD, Harness, make_settings, statements
from tests.mailbox import Mailbox, smtp_server

pytestmark = pytest.mark.anyio

NEW_PASSWORD = "a fresh passphrase from the link"


@pytest.fixture
async def mailbox() -> AsyncIterator[Mailbox]:
    async with smtp_server() as box:
        yield box


@pytest.fixture
def settings_overrides(mailbox: Mailbox) -> dict[str, Any]:
    return {"smtp_url": mailbox.url, "mail_retry_base_seconds": 0.05}


async def create_with_email(
    harness: Harness, name: str = "alice", email: str = "alice@example.org"
) -> None:
    async with harness.state.database.transaction() as db:
        await harness.state.users.create(db, name, PASSWORD, harness.clock.now(), email=email)


async def forgot(harness: Harness, **body: str) -> httpx.Response:
    return await harness.client.post("/auth/password/forgot", json=body)


async def reset(harness: Harness, token: str, password: str = NEW_PASSWORD) -> httpx.Response:
    return await harness.client.post(
        "/auth/password/reset", json={"token": token, "new_password": password}
    )


async def login_status(harness: Harness, password: str, name: str = "alice") -> int:
    response = await harness.client.post(
        "/auth/login", json={"username": name, "password": password}
    )
    return response.status_code


async def test_a_reset_link_sets_the_password_once_and_ends_every_session(
    harness: Harness, mailbox: Mailbox
) -> None:
    await create_with_email(harness)
    first = await harness.login()
    second = await harness.login()
    sids = {(await harness.me(t["access_token"])).json()["session_id"] for t in (first, second)}
    response = await forgot(harness, email="Alice@Example.org")
    assert response.status_code == 202
    assert response.headers["cache-control"] == "no-store"
    mail = await mailbox.next()
    assert mail.to == ["alice@example.org"]
    assert mail.subject == "Reset your password"
    assert f"https://auth.test/reset-password?token={mail.token}" in mail.text
    assert "30 minutes" in mail.text

    assert (await reset(harness, mail.token)).status_code == 204
    assert await login_status(harness, PASSWORD) == 401
    assert await login_status(harness, NEW_PASSWORD) == 200
    for tokens in (first, second):
        assert (await harness.refresh(tokens["refresh_token"])).status_code == 401
        assert (await harness.me(tokens["access_token"])).status_code == 401
    feed = (await harness.client.get("/auth/revocations")).json()
    revoked = {entry["sid"] for entry in feed["revoked_sids"]}
    assert sids <= revoked

    again = await reset(harness, mail.token, "yet another passphrase")
    assert (again.status_code, again.json()["error"]) == (401, "invalid_link")
    assert await login_status(harness, NEW_PASSWORD) == 200

    async with harness.state.database.read() as db:
        changed = list(await audit.find(db, event=audit.PASSWORD_CHANGED))
        requested = list(await audit.find(db, event=audit.PASSWORD_RESET_REQUESTED))
    assert [(e.username, e.actor, e.details) for e in changed] == [
        ("alice", "password_reset", {"sessions_revoked": 2})
    ]
    assert [(e.username, e.ip) for e in requested] == [("alice", "203.0.113.7")]


async def test_a_link_can_be_asked_for_by_username(harness: Harness, mailbox: Mailbox) -> None:
    await create_with_email(harness)
    assert (await forgot(harness, username="ALICE")).status_code == 202
    mail = await mailbox.next()
    assert mail.to == ["alice@example.org"]
    assert (await reset(harness, mail.token)).status_code == 204


async def test_unknown_accounts_get_the_same_answer_and_no_mail(
    harness: Harness, mailbox: Mailbox
) -> None:
    await create_with_email(harness)
    await harness.create_user("noaddress")  # an account without an address gets nothing
    answers = [
        await forgot(harness, email="nobody@example.org"),
        await forgot(harness, email="not an address"),
        await forgot(harness, username="nobody"),
        await forgot(harness, username="no body"),
        await forgot(harness, username="noaddress"),
        await forgot(harness, email="alice@example.org"),
    ]
    assert {(r.status_code, r.content) for r in answers} == {
        (answers[-1].status_code, answers[-1].content)
    }
    assert answers[-1].status_code == 202
    await harness.state.outbox.join()
    assert [m.to for m in mailbox.received] == [["alice@example.org"]]


async def test_an_unknown_account_costs_the_same_work_as_a_real_one(
    harness: Harness, mailbox: Mailbox
) -> None:
    """Timing without a stopwatch: both answers run the same statements (a lookup, the audit
    row, so both commit a write) but for the one row a real link needs."""
    await create_with_email(harness)
    with statements(harness) as known:
        real = await forgot(harness, email="alice@example.org")
    with statements(harness) as unknown:
        nobody = await forgot(harness, email="nobody@example.org")
    assert (real.status_code, real.content) == (nobody.status_code, nobody.content)
    assert known - unknown == Counter({"INSERT account_tokens": 1})
    assert not unknown - known
    assert unknown["INSERT audit_events"] == 1
    await harness.state.outbox.join()
    assert [m.to for m in mailbox.received] == [["alice@example.org"]]
    async with harness.state.database.read() as db:
        requested = list(await audit.find(db, event=audit.PASSWORD_RESET_REQUESTED))
    # The stranger's input is not kept.
    assert [(e.username, e.details) for e in requested] == [
        (None, {"mailed": False}),
        ("alice", {"mailed": True}),
    ]


async def test_a_disabled_account_gets_no_link(harness: Harness, mailbox: Mailbox) -> None:
    await create_with_email(harness)
    await create_with_email(harness, "bob", "bob@example.org")
    async with harness.state.database.transaction() as db:
        await harness.state.users.set_active(db, "alice", False, harness.clock.now(), "cli")
    assert (await forgot(harness, email="alice@example.org")).status_code == 202
    assert (await forgot(harness, email="bob@example.org")).status_code == 202
    await harness.state.outbox.join()
    assert [m.to for m in mailbox.received] == [["bob@example.org"]]


async def test_a_link_dies_after_thirty_minutes(
    harness: Harness, mailbox: Mailbox, clock: MovableClock
) -> None:
    await create_with_email(harness)
    await forgot(harness, email="alice@example.org")
    early = (await mailbox.next()).token
    await forgot(harness, email="alice@example.org")
    late = (await mailbox.next()).token
    clock.advance(29 * 60)
    # Within the half hour the link works (and voids the other one).
    assert (await reset(harness, early)).status_code == 204
    assert (await reset(harness, late)).status_code == 401
    await forgot(harness, email="alice@example.org")
    expired = (await mailbox.next()).token
    clock.advance(30 * 60)
    response = await reset(harness, expired, "the expired link's password")
    assert (response.status_code, response.json()["error"]) == (401, "invalid_link")
    assert await login_status(harness, NEW_PASSWORD) == 200


async def test_a_refused_password_leaves_the_link_usable(
    harness: Harness, mailbox: Mailbox
) -> None:
    await create_with_email(harness)
    await forgot(harness, email="alice@example.org")
    token = (await mailbox.next()).token
    short = await reset(harness, token, "short")
    assert (short.status_code, short.json()["error"]) == (400, "password_policy")
    assert (await reset(harness, token)).status_code == 204


async def test_a_verification_link_is_not_a_reset_link(harness: Harness, mailbox: Mailbox) -> None:
    await create_with_email(harness)
    await forgot(harness, email="alice@example.org")
    token = (await mailbox.next()).token
    verify = await harness.client.post("/auth/email/verify", json={"token": token})
    assert verify.status_code == 401
    assert (await reset(harness, token)).status_code == 204


async def test_two_resets_with_one_link_at_once_exactly_one_wins(
    harness: Harness, mailbox: Mailbox
) -> None:
    await create_with_email(harness)
    await forgot(harness, email="alice@example.org")
    token = (await mailbox.next()).token
    first, second = await asyncio.gather(
        reset(harness, token, "the first racer's password"),
        reset(harness, token, "the second racer's password"),
    )
    assert sorted([first.status_code, second.status_code]) == [204, 401]
    winner = (
        "the first racer's password"
        if first.status_code == 204
        else ("the second racer's password")
    )
    assert await login_status(harness, winner) == 200


async def test_expired_links_are_pruned(
    harness: Harness, mailbox: Mailbox, clock: MovableClock
) -> None:
    await create_with_email(harness)
    await forgot(harness, email="alice@example.org")
    await mailbox.next()
    clock.advance(harness.state.settings.password_reset_ttl)
    report = await prune(harness.state.database, harness.state.keys, clock.now())
    assert report.account_tokens == 1


async def test_a_bad_link_is_refused_before_the_password_is_judged(harness: Harness) -> None:
    response = await reset(harness, "at_" + "A" * 43, "short")
    assert (response.status_code, response.json()["error"]) == (401, "invalid_link")


async def test_forgot_needs_exactly_one_of_email_and_username(harness: Harness) -> None:
    for body in ({}, {"email": "a@example.org", "username": "a"}):
        response = await forgot(harness, **body)
        assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


@pytest.fixture
def limited(mailbox: Mailbox, database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "data",
        smtp_url=mailbox.url,
        rate_limit_enabled=True,
        rate_limit_account_per_ip=4,
        rate_limit_mail_per_account=2,
        # X-Forwarded-For from the harness's peer is believed, so tests pick addresses.
        trusted_proxies="203.0.113.7/32",
    )


@pytest.fixture
async def limited_harness(limited: Settings, clock: MovableClock) -> AsyncIterator[Harness]:
    app = create_app(limited, clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Harness(client=client, state=app.state.authsvc, clock=clock)


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_requests_are_limited_per_address(limited_harness: Harness) -> None:
    client = limited_harness.client
    statuses = [
        (
            await client.post(
                "/auth/password/forgot",
                json={"email": f"user{i}@example.org"},
                headers=_from("198.51.100.1"),
            )
        ).status_code
        for i in range(5)
    ]
    assert statuses == [202, 202, 202, 202, 429]
    # Guessing tokens counts against the same budget.
    guess = await client.post(
        "/auth/password/reset",
        json={"token": "at_" + "A" * 43, "new_password": NEW_PASSWORD},
        headers=_from("198.51.100.1"),
    )
    assert guess.status_code == 429
    other = await client.post(
        "/auth/password/forgot", json={"email": "x@example.org"}, headers=_from("198.51.100.2")
    )
    assert other.status_code == 202


async def test_mails_to_one_account_are_limited_and_the_answer_stays_the_same(
    limited_harness: Harness, mailbox: Mailbox, clock: MovableClock
) -> None:
    await create_with_email(limited_harness)
    answers = set()
    for i in range(3):
        # From different addresses, by name and by address: one account's budget.
        body = {"email": "alice@example.org"} if i % 2 else {"username": "alice"}
        response = await limited_harness.client.post(
            "/auth/password/forgot", json=body, headers=_from(f"198.51.100.{i}")
        )
        answers.add((response.status_code, response.content))
    assert len(answers) == 1
    await limited_harness.state.outbox.join()
    assert len(mailbox.received) == 2
    clock.advance(limited_harness.state.settings.rate_limit_mail_window_seconds)
    await limited_harness.client.post("/auth/password/forgot", json={"username": "alice"})
    await mailbox.wait_for(3)


async def test_production_without_smtp_has_no_password_reset(
    database_url: str, tmp_path: Path, clock: MovableClock
) -> None:
    settings = make_settings(database_url, tmp_path / "data", env="production")
    app = create_app(settings, clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for path, body in (
                ("/auth/password/forgot", {"email": "alice@example.org"}),
                ("/auth/password/reset", {"token": "at_" + "A" * 43, "new_password": "x" * 12}),
            ):
                response = await client.post(path, json=body)
                assert response.status_code == 404
                assert response.json()["error"] == "password_reset_disabled"
