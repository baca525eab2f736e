"""Sign-up and email verification over HTTP, with the mails read from a real SMTP server.

The abuse cases: a taken name or address gets the same answer as a new one (status and body)
and mails the owner instead; a link works once and expires; sign-up off is a stable 404;
per-address and per-account limits; production refuses sign-up without SMTP.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from authsvc.app import create_app
from authsvc.clock import MovableClock
from authsvc.config import ConfigError, Settings, load_settings
from authsvc.services import audit
from authsvc.services.maintenance import prune
from tests.conftest import PASSWORD, TEST_KEK, Harness, make_settings, statements
from tests.mailbox import Mailbox, smtp_server

pytestmark = pytest.mark.anyio


@pytest.fixture
async def mailbox() -> AsyncIterator[Mailbox]:
    async with smtp_server() as box:
        yield box


@pytest.fixture
def settings_overrides(mailbox: Mailbox) -> dict[str, Any]:
    return {
        "signup_enabled": True,
        "smtp_url": mailbox.url,
        "mail_from": "authsvc <noreply@auth.test>",
        "public_base_url": "https://app.test/account",
        "mail_retry_base_seconds": 0.05,
    }


async def signup(
    harness: Harness, username: str, email: str, password: str = PASSWORD
) -> httpx.Response:
    return await harness.client.post(
        "/auth/signup", json={"username": username, "email": email, "password": password}
    )


async def verify(harness: Harness, token: str) -> httpx.Response:
    return await harness.client.post("/auth/email/verify", json={"token": token})


async def login_status(harness: Harness, name: str, password: str = PASSWORD) -> int:
    response = await harness.client.post(
        "/auth/login", json={"username": name, "password": password}
    )
    return response.status_code


async def create_with_email(harness: Harness, name: str, email: str) -> None:
    async with harness.state.database.transaction() as db:
        await harness.state.users.create(db, name, PASSWORD, harness.clock.now(), email=email)


async def events(harness: Harness, event: str) -> list[Any]:
    async with harness.state.database.read() as db:
        return list(await audit.find(db, event=event))


async def test_signup_mails_a_link_that_switches_the_account_on_once(
    harness: Harness, mailbox: Mailbox
) -> None:
    response = await signup(harness, "Carol", " Carol@Example.ORG ")
    assert response.status_code == 202, response.text
    assert response.headers["cache-control"] == "no-store"
    mail = await mailbox.next()
    assert mail.to == ["carol@example.org"]
    assert mail.subject == "Confirm your email address"
    assert mail.message["From"] == "authsvc <noreply@auth.test>"
    assert f"https://app.test/account/verify-email?token={mail.token}" in mail.text
    assert mail.token in mail.part("html")
    # Off until the address is confirmed: the password alone does not log in.
    assert await login_status(harness, "carol") == 401

    assert (await verify(harness, mail.token)).status_code == 204
    assert await login_status(harness, "carol") == 200
    again = await verify(harness, mail.token)
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_link"
    async with harness.state.database.read() as db:
        user = await harness.state.users.get(db, "carol")
    assert user.email == "carol@example.org"
    assert user.email_verified_at == harness.clock.now()
    created = await events(harness, audit.USER_CREATED)
    assert [(e.username, e.actor) for e in created] == [("carol", "signup")]
    assert [e.username for e in await events(harness, audit.EMAIL_VERIFIED)] == ["carol"]


async def test_the_link_token_is_stored_only_as_a_digest(
    harness: Harness, mailbox: Mailbox
) -> None:
    await signup(harness, "dave", "dave@example.org")
    token = (await mailbox.next()).token
    async with harness.state.database.read() as db:
        rows = (await db.execute(text("SELECT digest, purpose FROM account_tokens"))).all()
    assert len(rows) == 1
    digest, purpose = rows[0]
    assert purpose == "verify_email"
    assert len(bytes(digest)) == 32 and token.encode() not in bytes(digest)


async def test_a_taken_address_gets_the_same_answer_and_mails_its_owner(
    harness: Harness, mailbox: Mailbox
) -> None:
    await create_with_email(harness, "alice", "alice@example.org")
    fresh = await signup(harness, "newcomer", "newcomer@example.org")
    assert (await mailbox.next()).to == ["newcomer@example.org"]
    taken = await signup(harness, "mallory", "ALICE@example.org", "another password")
    assert (taken.status_code, taken.content) == (fresh.status_code, fresh.content)
    note = await mailbox.next()
    assert note.to == ["alice@example.org"]
    assert note.subject == "Someone tried to sign up with your address"
    assert "token=" not in note.text
    assert await login_status(harness, "mallory", "another password") == 401
    refused = await events(harness, audit.SIGNUP_REFUSED)
    assert [(e.username, e.details) for e in refused] == [("alice", {"reason": "email_taken"})]


async def test_a_taken_name_gets_the_same_answer_and_tells_the_address(
    harness: Harness, mailbox: Mailbox
) -> None:
    await harness.create_user("alice")
    fresh = await signup(harness, "newcomer", "newcomer@example.org")
    await mailbox.next()
    taken = await signup(harness, "ALICE", "someone@example.org", "another password")
    assert (taken.status_code, taken.content) == (fresh.status_code, fresh.content)
    note = await mailbox.next()
    assert note.to == ["someone@example.org"]
    assert note.subject == "Your sign-up did not go through"
    assert '"alice"' in note.text and "token=" not in note.text
    # The existing account is untouched: its password still works, it got no address.
    assert await login_status(harness, "alice") == 200
    assert await login_status(harness, "alice", "another password") == 401


async def test_every_answer_costs_a_password_hash_a_write_and_one_mail(
    harness: Harness, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing without a stopwatch: a new account, a taken address and a taken name each hash
    the password (the costly step), commit an audit row and queue exactly one mail. The hasher
    is wrapped to count its calls; it still hashes."""
    await create_with_email(harness, "alice", "alice@example.org")
    hasher = harness.state.signup.passwords
    real_hash = hasher.hash
    hashed: list[str] = []

    async def counted(password: str) -> str:
        hashed.append(password)
        return await real_hash(password)

    monkeypatch.setattr(hasher, "hash", counted)
    answers = []
    for name, address in (
        ("newcomer", "newcomer@example.org"),
        ("mallory", "alice@example.org"),
        ("alice", "someone@example.org"),
    ):
        with statements(harness) as ran:
            answers.append(await signup(harness, name, address))
        assert ran["INSERT audit_events"] >= 1, (name, ran)
    assert len({(r.status_code, r.content) for r in answers}) == 1
    assert answers[0].status_code == 202
    assert hashed == [PASSWORD] * 3
    received = await mailbox.wait_for(3)
    assert sorted(m.to[0] for m in received) == [
        "alice@example.org",
        "newcomer@example.org",
        "someone@example.org",
    ]


async def test_user_input_is_escaped_in_the_html_part(harness: Harness, mailbox: Mailbox) -> None:
    await harness.create_user("<b>x</b>")
    await signup(harness, "<b>x</b>", "someone@example.org")
    note = await mailbox.next()
    assert '"<b>x</b>"' in note.text
    assert "&lt;b&gt;x&lt;/b&gt;" in note.part("html") and "<b>x" not in note.part("html")


async def test_an_expired_verification_link_is_refused(
    harness: Harness, mailbox: Mailbox, clock: MovableClock
) -> None:
    await signup(harness, "erin", "erin@example.org")
    token = (await mailbox.next()).token
    clock.advance(harness.state.settings.email_verification_ttl)
    response = await verify(harness, token)
    assert (response.status_code, response.json()["error"]) == (401, "invalid_link")
    assert await login_status(harness, "erin") == 401


async def test_malformed_and_unknown_links_are_refused_alike(harness: Harness) -> None:
    bodies = set()
    for token in ["at_" + "A" * 43, "not-a-token", "rt_" + "A" * 43]:
        response = await verify(harness, token)
        assert response.status_code == 401
        bodies.add(response.content)
    assert len(bodies) == 1


async def test_disabling_a_pending_account_kills_its_link(
    harness: Harness, mailbox: Mailbox
) -> None:
    await signup(harness, "frank", "frank@example.org")
    token = (await mailbox.next()).token
    async with harness.state.database.transaction() as db:
        await harness.state.users.set_active(db, "frank", False, harness.clock.now(), "cli")
    assert (await verify(harness, token)).status_code == 401
    assert await login_status(harness, "frank") == 401


async def test_an_address_changed_since_kills_the_link(harness: Harness, mailbox: Mailbox) -> None:
    await signup(harness, "grace", "grace@example.org")
    token = (await mailbox.next()).token
    async with harness.state.database.transaction() as db:
        user = await harness.state.users.get(db, "grace")
        await harness.state.users.set_email(db, user, "other@example.org", harness.clock.now(), "x")
    assert (await verify(harness, token)).status_code == 401


async def test_bad_input_is_refused_before_anything_is_looked_up(harness: Harness) -> None:
    short = await signup(harness, "henry", "henry@example.org", "short")
    assert (short.status_code, short.json()["error"]) == (400, "password_policy")
    bad_email = await signup(harness, "henry", "not an address")
    assert (bad_email.status_code, bad_email.json()["error"]) == (400, "invalid_email")
    bad_name = await signup(harness, "hen ry", "henry@example.org")
    assert (bad_name.status_code, bad_name.json()["error"]) == (400, "invalid_username")


async def test_a_failing_mail_server_is_retried(harness: Harness, mailbox: Mailbox) -> None:
    mailbox.fail_next = 2
    response = await signup(harness, "ivan", "ivan@example.org")
    assert response.status_code == 202
    mail = await mailbox.next()
    assert mail.to == ["ivan@example.org"]
    assert mailbox.failures == 2


@pytest.mark.parametrize(
    "settings_overrides",
    [{"signup_enabled": False}],
)
async def test_signup_disabled_is_a_stable_404(harness: Harness) -> None:
    response = await signup(harness, "judy", "judy@example.org")
    assert response.status_code == 404
    assert response.json()["error"] == "signup_disabled"


@pytest.fixture
def limited(mailbox: Mailbox, database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "data",
        signup_enabled=True,
        smtp_url=mailbox.url,
        rate_limit_enabled=True,
        rate_limit_account_per_ip=3,
        rate_limit_mail_per_account=2,
    )


@pytest.fixture
async def limited_harness(limited: Settings, clock: MovableClock) -> AsyncIterator[Harness]:
    app = create_app(limited, clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Harness(client=client, state=app.state.authsvc, clock=clock)


async def test_signups_are_limited_per_address(limited_harness: Harness) -> None:
    statuses = [
        (await signup(limited_harness, f"user{i}", f"user{i}@example.org")).status_code
        for i in range(4)
    ]
    assert statuses == [202, 202, 202, 429]


async def test_mails_to_one_owner_are_limited_and_the_answer_stays_the_same(
    limited_harness: Harness, mailbox: Mailbox
) -> None:
    await create_with_email(limited_harness, "alice", "alice@example.org")
    answers = {
        (await signup(limited_harness, f"probe{i}", "alice@example.org")).content for i in range(3)
    }
    assert len(answers) == 1
    await limited_harness.state.outbox.join()
    assert [m.to for m in mailbox.received] == [["alice@example.org"]] * 2


async def _prune(harness: Harness) -> int:
    # A batch of one: several pending sign-ups take several batches.
    report = await prune(harness.state.database, harness.state.keys, harness.clock.now(), 1)
    return report.unverified_signups


async def _usernames(harness: Harness) -> set[str]:
    async with harness.state.database.read() as db:
        return {user.username for user in await harness.state.users.list(db)}


async def test_unverified_signups_are_deleted_after_their_ttl(
    harness: Harness, mailbox: Mailbox
) -> None:
    ttl = harness.state.settings.unverified_signup_ttl
    assert ttl == 7 * 86400
    # Never verified: both go. Verified, or switched on by an operator: both stay.
    for name in ("ann", "bob", "cyd", "dee"):
        assert (await signup(harness, name, f"{name}@example.org")).status_code == 202
    tokens = {mail.to[0]: mail.token for mail in await mailbox.wait_for(4)}
    assert (await verify(harness, tokens["cyd@example.org"])).status_code == 204
    async with harness.state.database.transaction() as db:
        await harness.state.users.set_active(db, "dee", True, harness.clock.now(), "cli")
    # Made by an operator, switched off and with an unverified address: never a sign-up.
    await create_with_email(harness, "eve", "eve@example.org")
    async with harness.state.database.transaction() as db:
        await harness.state.users.set_active(db, "eve", False, harness.clock.now(), "cli")

    harness.clock.advance(ttl - 1)
    assert await _prune(harness) == 0
    harness.clock.advance(2)
    assert await _prune(harness) == 2
    assert await _usernames(harness) == {"cyd", "dee", "eve"}
    assert await login_status(harness, "cyd") == 200
    assert await login_status(harness, "dee") == 200
    deleted = await events(harness, audit.USER_DELETED)
    assert sorted((e.username, e.actor, e.details) for e in deleted) == [
        ("ann", "prune", {"reason": "signup_unverified"}),
        ("bob", "prune", {"reason": "signup_unverified"}),
    ]

    # The name and the address are free again.
    assert (await signup(harness, "ann", "ann@example.org")).status_code == 202
    fresh = (await mailbox.wait_for(5))[-1]
    assert fresh.subject == "Confirm your email address"
    assert (await verify(harness, fresh.token)).status_code == 204
    harness.clock.advance(ttl + 1)
    assert await _prune(harness) == 0


@pytest.mark.parametrize(
    "settings_overrides", [{"signup_enabled": True, "unverified_signup_ttl": 0}]
)
async def test_unverified_signups_are_kept_when_their_ttl_is_zero(
    harness: Harness, clock: MovableClock
) -> None:
    assert (await signup(harness, "fay", "fay@example.org")).status_code == 202
    clock.advance(365 * 86400)
    assert await _prune(harness) == 0
    assert await _usernames(harness) == {"fay"}


def test_an_unverified_signup_outlives_its_link() -> None:
    with pytest.raises(ConfigError, match="UNVERIFIED_SIGNUP_TTL"):
        load_settings(email_verification_ttl=2 * 86400, unverified_signup_ttl=86400)
    assert load_settings(unverified_signup_ttl=0).unverified_signup_ttl == 0
    assert load_settings(unverified_signup_ttl=86400).unverified_signup_ttl == 86400


def test_production_refuses_signup_without_smtp() -> None:
    production = {
        "env": "production",
        "key_encryption_key": TEST_KEK,
        "database_url": "postgresql://authsvc@db.internal/authsvc",
        "issuer": "https://auth.example.org",
        "signup_enabled": True,
    }
    with pytest.raises(ConfigError, match="AUTHSVC_SMTP_URL is required"):
        load_settings(**production)
    assert load_settings(**production, smtp_url="smtps://mail.example.org").signup_enabled
    # Without sign-up, no SMTP is needed.
    assert not load_settings(**{**production, "signup_enabled": False}).signup_enabled


def test_an_smtp_url_is_checked_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(smtp_url="http://user:hunter2@mail.example.org")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("settings_overrides", [{"signup_enabled": True}])
async def test_development_without_smtp_logs_the_mail(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="authsvc.mail")
    assert (await signup(harness, "kim", "kim@example.org")).status_code == 202
    await harness.state.outbox.join()
    logged = [r.getMessage() for r in caplog.records if r.name == "authsvc.mail"]
    assert any("kim@example.org" in m and "token=at_" in m for m in logged), logged
