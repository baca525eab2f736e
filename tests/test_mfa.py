"""The TOTP second factor over HTTP: enrolment, confirmation and recovery codes, the two-step
sign-in on the JSON API (answered with a code, a recovery code or a passkey) and the hosted login
page, the abuse cases (replay, brute force, token reuse and expiry), disabling, an admin's reset,
and the amr claims (RFC 8176)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from sqlalchemy import select

from authsvc.clock import MovableClock
from authsvc.config import ConfigError, load_settings
from authsvc.services import audit
from authsvc.services.admin import ADMIN_ROLE
from authsvc.store.models import AuditEvent, MfaChallenge, Passkey, RecoveryCode, TotpCredential
from tests.conftest import PASSWORD, Harness, sql_sent
from tests.test_authorization_code import (  # noqa: F401 - flow is a fixture
    Flow,
    exchange,
    flow,
    form_fields,
    pkce,
    redirect_query,
    request_params,
    sign_in,
)
from tests.test_kek_rotation import KEK_A, KEK_B, _serve, _settings
from tests.test_oauth import make_client, token
from tests.test_passkeys import SoftAuthenticator, b64, login_options, register

pytestmark = pytest.mark.anyio

MFA_AMR = ["pwd", "otp", "mfa"]
PASSKEY_MFA_AMR = ["pwd", "hwk", "mfa"]
WRONG_CODE = {"error": "invalid_mfa_code", "message": "The code is not valid."}


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def claims_of(access_token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return decoded


@dataclass
class Enrolled:
    secret: str
    recovery_codes: list[str]
    access_token: str

    def code(self, harness: Harness) -> str:
        return str(pyotp.TOTP(self.secret).at(harness.clock.now()))


async def enable_totp(harness: Harness, name: str = "alice") -> Enrolled:
    """Log in, enrol, confirm; then move to the next time step (the confirming code is spent)."""
    tokens = await harness.login(name)
    access = tokens["access_token"]
    enrolled = await harness.client.post("/auth/mfa/totp/enroll", headers=bearer(access))
    assert enrolled.status_code == 200, enrolled.text
    secret = enrolled.json()["secret"]
    code = pyotp.TOTP(secret).at(harness.clock.now())
    confirmed = await harness.client.post(
        "/auth/mfa/totp/confirm", json={"code": code}, headers=bearer(access)
    )
    assert confirmed.status_code == 200, confirmed.text
    harness.clock.advance(30)
    return Enrolled(secret, confirmed.json()["recovery_codes"], access)


async def start_login(
    harness: Harness, name: str = "alice", methods: tuple[str, ...] = ("totp", "recovery_code")
) -> str:
    response = await harness.client.post(
        "/auth/login", json={"username": name, "password": PASSWORD}
    )
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "mfa_required"
    assert body["methods"] == list(methods)
    assert "access_token" not in body and "refresh_token" not in body
    assert response.headers["cache-control"] == "no-store"
    mfa_token: str = body["mfa_token"]
    return mfa_token


async def verify(harness: Harness, mfa_token: str, **factor: Any) -> httpx.Response:
    return await harness.client.post("/auth/mfa/verify", json={"mfa_token": mfa_token, **factor})


async def events(harness: Harness, name: str) -> list[AuditEvent]:
    async with harness.state.database.read() as db:
        return [e for e in await audit.find(db, limit=1000) if e.event == name]


# -- enrolment ---------------------------------------------------------------------------------


async def test_enroll_answers_secret_uri_and_qr_and_stores_the_secret_encrypted(
    harness: Harness,
) -> None:
    await harness.create_user()
    access = (await harness.login())["access_token"]
    response = await harness.client.post("/auth/mfa/totp/enroll", headers=bearer(access))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert len(body["secret"]) == 32
    assert body["otpauth_uri"].startswith("otpauth://totp/auth.test:alice?secret=")
    assert "issuer=auth.test" in body["otpauth_uri"]
    assert body["qr_svg"].startswith("<svg")
    async with harness.state.database.read() as db:
        row = (await db.execute(select(TotpCredential))).scalar_one()
    assert row.confirmed_at is None
    assert body["secret"].encode() not in row.secret_encrypted
    # Not on until confirmed: the password alone still signs in.
    assert "access_token" in await harness.login()

    no_token = await harness.client.post("/auth/mfa/totp/enroll")
    assert no_token.status_code == 401


async def test_confirm_needs_a_right_code_and_answers_recovery_codes_kept_as_digests(
    harness: Harness,
) -> None:
    await harness.create_user()
    access = (await harness.login())["access_token"]
    secret = (await harness.client.post("/auth/mfa/totp/enroll", headers=bearer(access))).json()[
        "secret"
    ]
    wrong = await harness.client.post(
        "/auth/mfa/totp/confirm", json={"code": "000000"}, headers=bearer(access)
    )
    if pyotp.TOTP(secret).verify("000000", for_time=harness.clock.now(), valid_window=1):
        pytest.skip("the random secret made 000000 right")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_mfa_code"
    code = pyotp.TOTP(secret).at(harness.clock.now())
    confirmed = await harness.client.post(
        "/auth/mfa/totp/confirm", json={"code": code}, headers=bearer(access)
    )
    assert confirmed.status_code == 200, confirmed.text
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    async with harness.state.database.read() as db:
        stored = (await db.execute(select(RecoveryCode.digest))).scalars().all()
    assert len(stored) == 10
    assert not any(
        c.encode() in d or c.replace("-", "").encode() in d for c in codes for d in stored
    )
    again = await harness.client.post("/auth/mfa/totp/enroll", headers=bearer(access))
    assert again.status_code == 409 and again.json()["error"] == "mfa_already_enabled"
    assert len(await events(harness, audit.MFA_ENABLED)) == 1


# -- sign-in -----------------------------------------------------------------------------------


async def test_login_requires_the_second_factor_and_verify_issues_tokens_with_amr(
    harness: Harness,
) -> None:
    await harness.create_user()
    await harness.create_user("bob")
    plain = await harness.login("bob")
    assert claims_of(plain["access_token"])["amr"] == ["pwd"]

    enrolled = await enable_totp(harness)
    mfa_token = await start_login(harness)
    assert mfa_token.startswith("mfa_")
    response = await verify(harness, mfa_token, code=enrolled.code(harness))
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert claims_of(tokens["access_token"])["amr"] == MFA_AMR
    assert (await harness.me(tokens["access_token"])).json()["username"] == "alice"
    # A refresh keeps how the session signed in.
    refreshed = await harness.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert claims_of(refreshed.json()["access_token"])["amr"] == MFA_AMR
    assert len(await events(harness, audit.MFA_CHALLENGED)) == 1
    assert len(await events(harness, audit.MFA_VERIFIED)) == 1


async def test_a_wrong_password_gets_no_mfa_token(harness: Harness) -> None:
    await harness.create_user()
    await enable_totp(harness)
    response = await harness.client.post(
        "/auth/login", json={"username": "alice", "password": "wrong password"}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_credentials"
    assert "mfa_token" not in response.json()


async def test_a_code_is_accepted_once(harness: Harness) -> None:
    await harness.create_user()
    enrolled = await enable_totp(harness)
    code = enrolled.code(harness)
    assert (await verify(harness, await start_login(harness), code=code)).status_code == 200
    replay = await verify(harness, await start_login(harness), code=code)
    assert replay.status_code == 401 and replay.json()["error"] == "invalid_mfa_code"
    # The previous step's code is within the drift window, but older than the one used.
    harness.clock.advance(30)
    assert pyotp.TOTP(enrolled.secret).at(harness.clock.now() - timedelta(seconds=30)) == code
    again = await verify(harness, await start_login(harness), code=code)
    assert again.status_code == 401
    fresh = await verify(harness, await start_login(harness), code=enrolled.code(harness))
    assert fresh.status_code == 200, fresh.text


async def test_one_code_sent_twice_at_once_signs_in_once(harness: Harness) -> None:
    await harness.create_user()
    enrolled = await enable_totp(harness)
    tokens = [await start_login(harness) for _ in range(2)]
    code = enrolled.code(harness)
    answers = await asyncio.gather(*(verify(harness, t, code=code) for t in tokens))
    assert sorted(a.status_code for a in answers) == [200, 401]
    # One mfa_token with two different recovery codes at once: one sign-in.
    mfa_token = await start_login(harness)
    answers = await asyncio.gather(
        *(verify(harness, mfa_token, recovery_code=c) for c in enrolled.recovery_codes[:2])
    )
    assert sorted(a.status_code for a in answers) == [200, 401]


async def test_a_recovery_code_works_once(harness: Harness) -> None:
    await harness.create_user()
    enrolled = await enable_totp(harness)
    recovery = enrolled.recovery_codes[0]
    # Typed loosely: upper case, without the dash.
    used = await verify(
        harness, await start_login(harness), recovery_code=recovery.upper().replace("-", "")
    )
    assert used.status_code == 200, used.text
    assert claims_of(used.json()["access_token"])["amr"] == MFA_AMR
    reused = await verify(harness, await start_login(harness), recovery_code=recovery)
    assert reused.status_code == 401 and reused.json()["error"] == "invalid_mfa_code"
    other = await verify(
        harness, await start_login(harness), recovery_code=enrolled.recovery_codes[1]
    )
    assert other.status_code == 200
    methods = [e.details for e in await events(harness, audit.MFA_VERIFIED)]
    assert methods == [{"method": "recovery_code"}] * 2


async def test_a_request_without_exactly_one_factor_is_refused_and_not_counted(
    harness: Harness,
) -> None:
    await harness.create_user()
    enrolled = await enable_totp(harness)
    mfa_token = await start_login(harness)
    code = enrolled.code(harness)
    for factor in (
        {},
        {"code": code, "recovery_code": enrolled.recovery_codes[0]},
        {"code": code, "credential": {"id": "x"}},
        {"recovery_code": enrolled.recovery_codes[0], "credential": {"id": "x"}},
    ):
        response = await verify(harness, mfa_token, **factor)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_request"
    # Malformed requests are not attempts: all five are left.
    bad = wrong_code(enrolled, harness)
    for _ in range(4):
        assert (await verify(harness, mfa_token, code=bad)).status_code == 401
    assert (await verify(harness, mfa_token, code=code)).status_code == 200
    assert len(await events(harness, audit.MFA_FAILED)) == 4


# -- brute force and token handling --------------------------------------------------------------


def wrong_code(enrolled: Enrolled, harness: Harness) -> str:
    totp = pyotp.TOTP(enrolled.secret)
    now = harness.clock.now()
    right = {totp.at(now + timedelta(seconds=30 * offset)) for offset in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in right)


async def test_attempts_per_mfa_token_are_limited(harness: Harness) -> None:
    await harness.create_user()
    enrolled = await enable_totp(harness)
    mfa_token = await start_login(harness)
    bad = wrong_code(enrolled, harness)
    for _ in range(5):
        response = await verify(harness, mfa_token, code=bad)
        assert response.status_code == 401 and response.json()["error"] == "invalid_mfa_code"
    spent = await verify(harness, mfa_token, code=enrolled.code(harness))
    assert spent.status_code == 401 and spent.json()["error"] == "invalid_mfa_token"
    assert len(await events(harness, audit.MFA_FAILED)) == 5


async def test_consecutive_failures_lock_the_factor_across_tokens(harness: Harness) -> None:
    await harness.create_user()
    enrolled = await enable_totp(harness)
    bad = wrong_code(enrolled, harness)
    for _ in range(2):
        mfa_token = await start_login(harness)
        for _ in range(5):
            assert (await verify(harness, mfa_token, code=bad)).status_code == 401
    locked = await verify(harness, await start_login(harness), code=enrolled.code(harness))
    assert locked.status_code == 429, locked.text
    assert int(locked.headers["retry-after"]) > 0
    harness.clock.advance(15 * 60 + 1)
    unlocked = await verify(harness, await start_login(harness), code=enrolled.code(harness))
    assert unlocked.status_code == 200, unlocked.text


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "mfa_token_ttl": 60,
            "mfa_attempts_per_token": 2,
            "mfa_failures_before_lock": 3,
            "mfa_lock_seconds": 120,
        }
    ],
)
async def test_the_limits_are_the_operators_settings(harness: Harness) -> None:
    await harness.create_user()
    enrolled = await enable_totp(harness)
    bad = wrong_code(enrolled, harness)
    first = await start_login(harness)
    for _ in range(2):
        assert (await verify(harness, first, code=bad)).status_code == 401
    spent = await verify(harness, first, code=enrolled.code(harness))
    assert spent.json()["error"] == "invalid_mfa_token"
    # The third wrong code in a row, on another token, locks the factor for two minutes.
    assert (await verify(harness, await start_login(harness), code=bad)).status_code == 401
    locked = await verify(harness, await start_login(harness), code=enrolled.code(harness))
    assert locked.status_code == 429, locked.text
    assert 0 < int(locked.headers["retry-after"]) <= 121
    harness.clock.advance(121)
    late = await start_login(harness)
    harness.clock.advance(61)
    expired = await verify(harness, late, code=enrolled.code(harness))
    assert expired.json()["error"] == "invalid_mfa_token"
    unlocked = await verify(harness, await start_login(harness), code=enrolled.code(harness))
    assert unlocked.status_code == 200, unlocked.text


@pytest.mark.parametrize(
    "unsafe",
    [
        {"mfa_token_ttl": 30},
        {"mfa_token_ttl": 3600},
        {"mfa_attempts_per_token": 0},
        {"mfa_attempts_per_token": 50},
        {"mfa_failures_before_lock": 1000},
        {"mfa_lock_seconds": 5},
    ],
)
def test_unsafe_limits_are_refused_at_start_up(unsafe: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match=next(iter(unsafe))):
        load_settings(**unsafe)


async def test_mfa_token_is_single_use_short_lived_and_kept_as_a_digest(
    harness: Harness,
) -> None:
    await harness.create_user()
    enrolled = await enable_totp(harness)
    mfa_token = await start_login(harness)
    async with harness.state.database.read() as db:
        digests = (await db.execute(select(MfaChallenge.digest))).scalars().all()
    assert digests and all(mfa_token.encode() not in d for d in digests)
    assert (await verify(harness, mfa_token, code=enrolled.code(harness))).status_code == 200
    harness.clock.advance(30)
    reused = await verify(harness, mfa_token, code=enrolled.code(harness))
    assert reused.status_code == 401 and reused.json()["error"] == "invalid_mfa_token"

    late = await start_login(harness)
    harness.clock.advance(5 * 60 + 1)
    expired = await verify(harness, late, code=enrolled.code(harness))
    assert expired.status_code == 401 and expired.json()["error"] == "invalid_mfa_token"
    forged = await verify(harness, "mfa_" + "A" * 43, code=enrolled.code(harness))
    assert forged.status_code == 401 and forged.json()["error"] == "invalid_mfa_token"


async def test_a_malformed_mfa_token_is_answered_as_a_wrong_one(harness: Harness) -> None:
    await harness.create_user()
    enrolled = await enable_totp(harness)
    mfa_token = await start_login(harness)
    code = enrolled.code(harness)
    unknown = "mfa_" + "A" * 43
    wrong = await verify(harness, unknown, code=code)
    wrong_options = await passkey_options(harness, unknown)
    assert wrong.status_code == wrong_options.status_code == 401
    for malformed in (
        "x",
        mfa_token[:-1],
        mfa_token + "A",
        "rt_" + mfa_token[4:],
        mfa_token[:-1] + "=",
        "mfa_" + "A" * 200,
    ):
        with sql_sent(harness.state) as sent:
            answer = await verify(harness, malformed, code=code)
            options = await passkey_options(harness, malformed)
        assert (answer.status_code, answer.json()) == (wrong.status_code, wrong.json())
        assert (options.status_code, options.json()) == (
            wrong_options.status_code,
            wrong_options.json(),
        )
        # Refused on its shape, before any lookup.
        assert not [s for s in sent if "mfa_challenges" in s], malformed
    # None of them was an attempt on the real challenge: all its attempts are left.
    assert (await verify(harness, mfa_token, code=code)).status_code == 200
    assert await events(harness, audit.MFA_FAILED) == []


async def test_a_malformed_recovery_code_is_answered_and_counted_as_a_wrong_one(
    harness: Harness,
) -> None:
    await harness.create_user()
    enrolled = await enable_totp(harness)
    mfa_token = await start_login(harness)
    for typed in ("aaaaa-aaaaa", "00000-00000", "abc", "aaaaa-aaaaa-aaaaa"):
        answer = await verify(harness, mfa_token, recovery_code=typed)
        assert (answer.status_code, answer.json()) == (401, WRONG_CODE), typed
    assert [e.details for e in await events(harness, audit.MFA_FAILED)] == [
        {"method": "recovery_code"}
    ] * 4
    used = await verify(harness, mfa_token, recovery_code=enrolled.recovery_codes[0])
    assert used.status_code == 200, used.text


async def test_the_password_grant_does_not_bypass_the_second_factor(harness: Harness) -> None:
    await harness.create_user()
    await enable_totp(harness)
    client_id, _ = await make_client(harness)
    response = await token(
        harness,
        None,
        grant_type="password",
        username="alice",
        password=PASSWORD,
        client_id=client_id,
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_grant"
    assert "two-factor" in body["error_description"]
    assert "access_token" not in body


# -- disabling and resetting ---------------------------------------------------------------------


async def test_disabling_needs_a_fresh_code(harness: Harness) -> None:
    await harness.create_user()
    enrolled = await enable_totp(harness)
    access = enrolled.access_token
    url = "/auth/mfa/totp/disable"
    no_code = await harness.client.post(url, json={}, headers=bearer(access))
    assert no_code.status_code == 401 and no_code.json()["error"] == "invalid_mfa_code"
    bad = await harness.client.post(
        url, json={"code": wrong_code(enrolled, harness)}, headers=bearer(access)
    )
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_mfa_code"
    no_token = await harness.client.post(url, json={"code": enrolled.code(harness)})
    assert no_token.status_code == 401
    done = await harness.client.post(
        url, json={"code": enrolled.code(harness)}, headers=bearer(access)
    )
    assert done.status_code == 204, done.text
    assert claims_of((await harness.login())["access_token"])["amr"] == ["pwd"]
    again = await harness.client.post(url, json={"code": "123456"}, headers=bearer(access))
    assert again.status_code == 400 and again.json()["error"] == "mfa_not_enabled"
    async with harness.state.database.read() as db:
        assert (await db.execute(select(RecoveryCode))).first() is None
    assert len(await events(harness, audit.MFA_DISABLED)) == 1


async def test_a_code_already_spent_on_a_sign_in_does_not_disable(harness: Harness) -> None:
    await harness.create_user()
    enrolled = await enable_totp(harness)
    code = enrolled.code(harness)
    signed_in = await verify(harness, await start_login(harness), code=code)
    assert signed_in.status_code == 200, signed_in.text
    access = signed_in.json()["access_token"]
    url = "/auth/mfa/totp/disable"
    replay = await harness.client.post(url, json={"code": code}, headers=bearer(access))
    assert replay.status_code == 401 and replay.json() == WRONG_CODE
    harness.clock.advance(30)
    fresh = await harness.client.post(
        url, json={"code": enrolled.code(harness)}, headers=bearer(access)
    )
    assert fresh.status_code == 204, fresh.text


async def test_an_admin_resets_the_factor_and_it_is_audited(harness: Harness) -> None:
    alice = await harness.create_user()
    await harness.create_user("root", roles=[ADMIN_ROLE])
    enrolled = await enable_totp(harness)
    url = f"/admin/users/{alice}/mfa"
    refused = await harness.client.delete(url, headers=bearer(enrolled.access_token))
    assert refused.status_code == 403
    admin = (await harness.login("root"))["access_token"]
    reset = await harness.client.delete(url, headers=bearer(admin))
    assert reset.status_code == 204, reset.text
    assert "access_token" in await harness.login()
    twice = await harness.client.delete(url, headers=bearer(admin))
    assert twice.status_code == 400 and twice.json()["error"] == "mfa_not_enabled"
    [event] = await events(harness, audit.MFA_RESET)
    assert str(event.user_id) == alice and event.actor and event.actor.startswith("user:")


# -- a passkey as the second factor ---------------------------------------------------------------


async def passkey_options(harness: Harness, mfa_token: str) -> httpx.Response:
    return await harness.client.post("/auth/mfa/passkey/options", json={"mfa_token": mfa_token})


async def start_passkey_login(harness: Harness, name: str = "alice") -> tuple[str, dict[str, Any]]:
    """An mfa_token offering the passkey, and request options for it."""
    mfa_token = await start_login(harness, name, ("totp", "recovery_code", "passkey"))
    options = await passkey_options(harness, mfa_token)
    assert options.status_code == 200, options.text
    return mfa_token, options.json()


async def test_a_passkey_answers_the_second_step(harness: Harness) -> None:
    await harness.create_user()
    enrolled = await enable_totp(harness)
    key = SoftAuthenticator()
    await register(harness, enrolled.access_token, key)

    mfa_token = await start_login(harness, methods=("totp", "recovery_code", "passkey"))
    response = await passkey_options(harness, mfa_token)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    options = response.json()
    assert [c["id"] for c in options["allowCredentials"]] == [b64(key.credential_id)]
    assert options["userVerification"] == "required" and options["rpId"] == "auth.test"
    # Asking for options spends nothing, and the newest options are the ones that count.
    options = (await passkey_options(harness, mfa_token)).json()

    signed_in = await verify(harness, mfa_token, credential=key.get(options))
    assert signed_in.status_code == 200, signed_in.text
    tokens = signed_in.json()
    assert claims_of(tokens["access_token"])["amr"] == PASSKEY_MFA_AMR
    assert (await harness.me(tokens["access_token"])).json()["username"] == "alice"
    refreshed = await harness.refresh(tokens["refresh_token"])
    assert claims_of(refreshed.json()["access_token"])["amr"] == PASSKEY_MFA_AMR
    async with harness.state.database.read() as db:
        stored = (await db.execute(select(Passkey))).scalar_one()
    assert stored.sign_count == key.counter and stored.last_used_at is not None
    assert [e.details for e in await events(harness, audit.MFA_VERIFIED)] == [{"method": "passkey"}]

    # The mfa_token was spent: neither another answer nor new options.
    reused = await verify(harness, mfa_token, code=enrolled.code(harness))
    assert reused.status_code == 401 and reused.json()["error"] == "invalid_mfa_token"
    late = await passkey_options(harness, mfa_token)
    assert late.status_code == 401 and late.json()["error"] == "invalid_mfa_token"


async def test_a_passkey_answer_is_bound_to_the_user_and_the_mfa_token(harness: Harness) -> None:
    await harness.create_user()
    await harness.create_user("bob")
    enrolled = await enable_totp(harness)
    alices, bobs = SoftAuthenticator(), SoftAuthenticator()
    await register(harness, enrolled.access_token, alices)
    await register(harness, (await harness.login("bob"))["access_token"], bobs)

    mfa_token, options = await start_passkey_login(harness)
    other_token, other_options = await start_passkey_login(harness)
    refused = [
        # Bob's passkey, on a challenge issued to Alice.
        await verify(harness, mfa_token, credential=bobs.get(options)),
        # A challenge of the passwordless login endpoint.
        await verify(harness, mfa_token, credential=alices.get(await login_options(harness))),
        # Alice's passkey on a challenge issued for her other mfa_token.
        await verify(harness, mfa_token, credential=alices.get(other_options)),
    ]
    for response in refused:
        assert response.status_code == 401, response.text
        assert response.json() == WRONG_CODE

    # A good answer signs in once; the same assertion replayed on a new sign-in does not.
    options = (await passkey_options(harness, mfa_token)).json()
    assertion = alices.get(options)
    assert (await verify(harness, mfa_token, credential=assertion)).status_code == 200
    replayed = await verify(harness, other_token, credential=assertion)
    assert replayed.status_code == 401 and replayed.json() == WRONG_CODE
    failed = await events(harness, audit.MFA_FAILED)
    assert [e.details for e in failed] == [{"method": "passkey"}] * 4


async def test_wrong_passkey_answers_use_up_the_mfa_tokens_attempts(harness: Harness) -> None:
    await harness.create_user()
    enrolled = await enable_totp(harness)
    key, stranger = SoftAuthenticator(), SoftAuthenticator()
    await register(harness, enrolled.access_token, key)
    mfa_token = await start_login(harness, methods=("totp", "recovery_code", "passkey"))
    for _ in range(5):
        options = (await passkey_options(harness, mfa_token)).json()
        response = await verify(harness, mfa_token, credential=stranger.get(options))
        assert response.status_code == 401 and response.json() == WRONG_CODE
    out = await passkey_options(harness, mfa_token)
    assert out.status_code == 401 and out.json()["error"] == "invalid_mfa_token"
    spent = await verify(harness, mfa_token, credential=key.get(options))
    assert spent.status_code == 401 and spent.json()["error"] == "invalid_mfa_token"


async def test_the_code_lock_leaves_the_passkey_open(harness: Harness) -> None:
    # Someone with only the password can lock the codes, not the owner's passkey; and wrong
    # assertions (nothing to guess in a signature) do not count toward the lock.
    await harness.create_user()
    enrolled = await enable_totp(harness)
    key, stranger = SoftAuthenticator(), SoftAuthenticator()
    await register(harness, enrolled.access_token, key)
    methods = ("totp", "recovery_code", "passkey")
    for _ in range(3):
        mfa_token = await start_login(harness, methods=methods)
        for _ in range(5):
            options = (await passkey_options(harness, mfa_token)).json()
            wrong = await verify(harness, mfa_token, credential=stranger.get(options))
            assert wrong.status_code == 401 and wrong.json() == WRONG_CODE
    bad = wrong_code(enrolled, harness)
    for _ in range(2):
        mfa_token = await start_login(harness, methods=methods)
        for _ in range(5):
            assert (await verify(harness, mfa_token, code=bad)).status_code == 401
    mfa_token = await start_login(harness, methods=methods)
    locked = await verify(harness, mfa_token, code=enrolled.code(harness))
    assert locked.status_code == 429, locked.text
    options = (await passkey_options(harness, mfa_token)).json()
    signed_in = await verify(harness, mfa_token, credential=key.get(options))
    assert signed_in.status_code == 200, signed_in.text
    assert claims_of(signed_in.json()["access_token"])["amr"] == PASSKEY_MFA_AMR
    # The owner's success ends the lock, as a right code would.
    harness.clock.advance(30)
    again = await verify(
        harness, await start_login(harness, methods=methods), code=enrolled.code(harness)
    )
    assert again.status_code == 200, again.text


async def test_without_a_passkey_the_second_step_offers_none(harness: Harness) -> None:
    await harness.create_user()
    await harness.create_user("bob")
    await enable_totp(harness)
    mfa_token = await start_login(harness)  # methods: totp and recovery_code only
    response = await passkey_options(harness, mfa_token)
    assert response.status_code == 400 and response.json()["error"] == "mfa_not_enabled"
    forged = await passkey_options(harness, "mfa_" + "A" * 43)
    assert forged.status_code == 401 and forged.json()["error"] == "invalid_mfa_token"
    # A passkey alone does not turn the second step on: the password still signs Bob in.
    bob = await harness.login("bob")
    await register(harness, bob["access_token"], SoftAuthenticator())
    assert claims_of((await harness.login("bob"))["access_token"])["amr"] == ["pwd"]


async def test_openapi_documents_the_passkey_step(harness: Harness) -> None:
    schema = (await harness.client.get("/openapi.json")).json()
    options = schema["paths"]["/auth/mfa/passkey/options"]["post"]
    assert options["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MfaToken"
    }
    assert {"400", "401", "413", "429"} <= set(options["responses"])
    schemas = schema["components"]["schemas"]
    assert "mfa_token" in schemas["MfaToken"]["properties"]
    assert "credential" in schemas["MfaVerifyRequest"]["properties"]


# -- the hosted login page -----------------------------------------------------------------------


async def test_the_hosted_login_page_asks_for_the_code_before_issuing_a_code(
    flow: Flow,  # noqa: F811 - the fixture
) -> None:
    http, clock = flow.http, flow.clock
    access = (
        await http.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    ).json()["access_token"]
    secret = (await http.post("/auth/mfa/totp/enroll", headers=bearer(access))).json()["secret"]
    confirmed = await http.post(
        "/auth/mfa/totp/confirm",
        json={"code": pyotp.TOTP(secret).at(clock.now())},
        headers=bearer(access),
    )
    assert confirmed.status_code == 200
    clock.advance(30)

    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    params = request_params(client_id, challenge)
    page = await http.get("/oauth/authorize", params=params)
    asked = await sign_in(flow, page)
    assert asked.status_code == 200, asked.text
    assert '<label for="code">' in asked.text and "location" not in asked.headers
    fields = form_fields(asked)
    assert fields["mfa_token"].startswith("mfa_")

    wrong = await http.post("/oauth/authorize", data={**fields, "code": "12345x", "action": "mfa"})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    answer = await http.post(
        "/oauth/authorize",
        data={**fields, "code": pyotp.TOTP(secret).at(clock.now()), "action": "mfa"},
    )
    assert answer.status_code == 303, answer.text
    query = redirect_query(answer)
    tokens = await exchange(flow, client_id, query["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert claims_of(body["access_token"])["amr"] == MFA_AMR
    # (Read unverified: the test clock is a time step ahead of the wall clock PyJWT reads.)
    assert claims_of(body["id_token"])["amr"] == MFA_AMR
    # The same mfa_token does not sign in twice.
    reused = await http.post(
        "/oauth/authorize",
        data={**fields, "code": pyotp.TOTP(secret).at(clock.now()), "action": "mfa"},
    )
    assert reused.status_code == 401 and '<label for="password">' in reused.text
    # An mfa_token of the page does not finish a JSON sign-in.
    json_reuse = await http.post(
        "/auth/mfa/verify", json={"mfa_token": fields["mfa_token"], "code": "123456"}
    )
    assert json_reuse.status_code == 401
    assert json_reuse.json()["error"] == "invalid_mfa_token"


# -- the key-encryption key ----------------------------------------------------------------------


async def test_totp_secrets_survive_a_kek_rotation_and_are_rewrapped(
    database_url: str, tmp_path: Path, clock: MovableClock
) -> None:
    async with _serve(_settings(database_url, tmp_path, KEK_A), clock) as harness:
        await harness.create_user()
        enrolled = await enable_totp(harness)
    rotated = _settings(database_url, tmp_path, KEK_B, KEK_A)
    async with _serve(rotated, clock) as harness:
        signed_in = await verify(harness, await start_login(harness), code=enrolled.code(harness))
        assert signed_in.status_code == 200, signed_in.text
        async with harness.state.database.transaction() as db:
            report = await harness.state.secrets.rewrap(db, clock.now())
        assert any(item.startswith("TOTP secret of user") for item in report.rewrapped)
    clock.advance(30)
    async with _serve(_settings(database_url, tmp_path, KEK_B), clock) as harness:
        signed_in = await verify(harness, await start_login(harness), code=enrolled.code(harness))
        assert signed_in.status_code == 200, signed_in.text


# -- a passkey on the hosted login page ----------------------------------------------------------

SCRIPT_URL = "https://auth.test/oauth/authorize/passkey.js"
OPTIONS_URL = "https://auth.test/oauth/authorize/passkey/options"


@dataclass
class HostedUser:
    secret: str
    access_token: str


async def hosted_totp(flow: Flow, name: str = "alice") -> HostedUser:  # noqa: F811
    """TOTP on for `name` over HTTP; the clock then moves past the confirming code's step."""
    http, clock = flow.http, flow.clock
    login = await http.post("/auth/login", json={"username": name, "password": PASSWORD})
    access = login.json()["access_token"]
    secret = (await http.post("/auth/mfa/totp/enroll", headers=bearer(access))).json()["secret"]
    confirmed = await http.post(
        "/auth/mfa/totp/confirm",
        json={"code": pyotp.TOTP(secret).at(clock.now())},
        headers=bearer(access),
    )
    assert confirmed.status_code == 200, confirmed.text
    clock.advance(30)
    return HostedUser(secret, access)


async def hosted_register(flow: Flow, access_token: str, key: SoftAuthenticator) -> None:  # noqa: F811
    options = await flow.http.post("/auth/passkeys/register/options", headers=bearer(access_token))
    created = await flow.http.post(
        "/auth/passkeys/register/verify",
        json={"credential": key.create(options.json()), "name": "Laptop"},
        headers=bearer(access_token),
    )
    assert created.status_code == 201, created.text


async def code_form(
    flow: Flow,  # noqa: F811
    client_id: str,
    challenge: str,
    **extra: str,
) -> httpx.Response:
    """The hosted page's second step, reached with Alice's password."""
    params = request_params(client_id, challenge, **extra)
    page = await flow.http.get("/oauth/authorize", params=params)
    asked = await sign_in(flow, page)
    assert asked.status_code == 200 and '<label for="code">' in asked.text, asked.text
    return asked


async def hosted_options(flow: Flow, fields: dict[str, str], **headers: str) -> httpx.Response:  # noqa: F811
    return await flow.http.post("/oauth/authorize/passkey/options", data=fields, headers=headers)


def csp_of(page: httpx.Response) -> dict[str, list[str]]:
    directives = page.headers["content-security-policy"].split(";")
    return {d.split()[0]: d.split()[1:] for d in (d.strip() for d in directives) if d}


def offers_passkey(page: httpx.Response) -> bool:
    offered = 'id="passkey"' in page.text
    assert offered == ("<script" in page.text) == ("script-src" in csp_of(page))
    return offered


async def hosted_events(flow: Flow, name: str) -> list[AuditEvent]:  # noqa: F811
    async with flow.state.database.read() as db:
        return [e for e in await audit.find(db, limit=1000) if e.event == name]


async def test_the_hosted_code_form_offers_a_passkey_only_to_a_user_with_one(
    flow: Flow,  # noqa: F811
) -> None:
    user = await hosted_totp(flow)
    client_id, _ = await flow.client()
    _, challenge = pkce()
    without = await code_form(flow, client_id, challenge)
    assert not offers_passkey(without)
    assert "credential" not in form_fields(without)

    await hosted_register(flow, user.access_token, SoftAuthenticator())
    page = await code_form(flow, client_id, challenge)
    assert offers_passkey(page)
    # The button shows only once its script runs: without JavaScript, the code form alone.
    assert re.search(r'<button type="button" id="passkey"[^>]* hidden>Use a passkey', page.text)
    assert form_fields(page)["credential"] == ""
    csp = csp_of(page)
    # Exactly the one script and the one endpoint it calls; nothing inline.
    assert csp["script-src"] == [SCRIPT_URL] and csp["connect-src"] == [OPTIONS_URL]
    assert csp["default-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    assert csp["form-action"] == ["'self'", "https://app.example"]
    assert csp["base-uri"] == ["'none'"]
    assert "<script>" not in page.text
    src, integrity = re.findall(r'<script src="([^"]+)" integrity="([^"]+)" defer>', page.text)[0]
    assert src.startswith(SCRIPT_URL + "?v=")

    script = await flow.http.get(src)
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["cache-control"].startswith("public, max-age=")
    assert script.headers["x-content-type-options"] == "nosniff"
    digest = base64.b64encode(hashlib.sha384(script.content).digest()).decode()
    assert integrity == f"sha384-{digest}"
    assert b"navigator.credentials.get" in script.content

    # Shown again after a wrong code, the form still offers it.
    wrong = await flow.http.post(
        "/oauth/authorize", data={**form_fields(page), "code": "000000", "action": "mfa"}
    )
    assert wrong.status_code == 401 and offers_passkey(wrong)

    # No other page runs script: the login page, the consent page, an error page.
    login = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    third_party, _ = await flow.client(first_party=False)
    finished = await flow.http.post(
        "/oauth/authorize",
        data={**form_fields(page), "code": pyotp.TOTP(user.secret).at(flow.clock.now())}
        | {"action": "mfa"},
    )
    assert finished.status_code == 303, finished.text
    consent = await flow.http.get("/oauth/authorize", params=request_params(third_party, challenge))
    assert "Allow access?" in consent.text
    error = await flow.http.get("/oauth/authorize", params={"client_id": "nope"})
    assert error.status_code == 400
    for other in (login, consent, error):
        assert "script-src" not in csp_of(other) and "<script" not in other.text


async def test_hosted_passkey_options_need_the_forms_csrf_token_and_sign_in(
    flow: Flow,  # noqa: F811
) -> None:
    user = await hosted_totp(flow)
    key = SoftAuthenticator()
    await hosted_register(flow, user.access_token, key)
    client_id, _ = await flow.client()
    _, challenge = pkce()
    fields = form_fields(await code_form(flow, client_id, challenge))

    good = await hosted_options(flow, fields, Origin="https://auth.test")
    assert good.status_code == 200, good.text
    assert good.headers["cache-control"] == "no-store"
    options = good.json()
    assert [c["id"] for c in options["allowCredentials"]] == [b64(key.credential_id)]
    assert options["userVerification"] == "required" and options["rpId"] == "auth.test"

    no_token = {k: v for k, v in fields.items() if k != "csrf_token"}
    refused = [
        await hosted_options(flow, no_token),
        await hosted_options(flow, {**fields, "csrf_token": fields["csrf_token"][:-2] + "AA"}),
        await hosted_options(flow, fields, Origin="https://evil.example"),
    ]
    cookies = flow.http.cookies
    flow.http.cookies = httpx.Cookies()  # another browser, without the page's CSRF cookie
    try:
        refused.append(await hosted_options(flow, fields))
    finally:
        flow.http.cookies = cookies
    for response in refused:
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "csrf_rejected"
    assert "allowCredentials" not in str([r.text for r in refused])

    forged = await hosted_options(flow, {**fields, "mfa_token": "mfa_" + "A" * 43})
    assert forged.status_code == 401 and forged.json()["error"] == "invalid_mfa_token"
    no_sign_in = await hosted_options(flow, {k: v for k, v in fields.items() if k != "mfa_token"})
    assert no_sign_in.status_code == 401
    unknown_client = await hosted_options(flow, {**fields, "client_id": "nope"})
    assert unknown_client.status_code == 400
    as_json = await flow.http.post("/oauth/authorize/passkey/options", json=fields)
    assert as_json.status_code == 400
    # The options spend nothing: the form's code still finishes the sign-in.
    code = pyotp.TOTP(user.secret).at(flow.clock.now())
    finished = await flow.http.post(
        "/oauth/authorize", data={**fields, "code": code} | {"action": "mfa"}
    )
    assert finished.status_code == 303, finished.text
    spent = await hosted_options(flow, fields)
    assert spent.status_code == 401 and spent.json()["error"] == "invalid_mfa_token"


async def test_a_passkey_finishes_the_hosted_sign_in(flow: Flow) -> None:  # noqa: F811
    user = await hosted_totp(flow)
    key = SoftAuthenticator()
    await hosted_register(flow, user.access_token, key)
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    fields = form_fields(await code_form(flow, client_id, challenge))
    options = (await hosted_options(flow, fields)).json()

    # What the script posts: the form's fields, the assertion in `credential`, the code empty.
    answer = await flow.http.post(
        "/oauth/authorize",
        data={
            **fields,
            "credential": json.dumps(key.get(options)),
            "code": "",
            "recovery_code": "",
            "action": "mfa",
        },
    )
    assert answer.status_code == 303, answer.text
    tokens = await exchange(flow, client_id, redirect_query(answer)["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert claims_of(body["access_token"])["amr"] == PASSKEY_MFA_AMR
    assert claims_of(body["id_token"])["amr"] == PASSKEY_MFA_AMR
    verified = await hosted_events(flow, audit.MFA_VERIFIED)
    assert [e.details for e in verified] == [{"method": "passkey"}]
    async with flow.state.database.read() as db:
        stored = (await db.execute(select(Passkey))).scalar_one()
    assert stored.sign_count == key.counter


async def test_a_wrong_or_replayed_passkey_on_the_hosted_page_is_a_wrong_code(
    flow: Flow,  # noqa: F811
) -> None:
    async with flow.state.database.transaction() as db:
        await flow.state.users.create(db, "bob", PASSWORD, flow.clock.now(), [])
    alice = await hosted_totp(flow)
    alices, bobs = SoftAuthenticator(), SoftAuthenticator()
    await hosted_register(flow, alice.access_token, alices)
    bob = await flow.http.post("/auth/login", json={"username": "bob", "password": PASSWORD})
    await hosted_register(flow, bob.json()["access_token"], bobs)
    client_id, _ = await flow.client()
    _, challenge = pkce()

    async def answer(fields: dict[str, str], **factor: str) -> httpx.Response:
        return await flow.http.post("/oauth/authorize", data={**fields, **factor, "action": "mfa"})

    fields = form_fields(await code_form(flow, client_id, challenge))
    wrong_code = await answer(fields, code="000000")
    assert wrong_code.status_code == 401
    options = (await hosted_options(flow, fields)).json()
    # Bob's passkey on a challenge issued to Alice.
    bobs_key = await answer(fields, credential=json.dumps(bobs.get(options)))
    # A good assertion signs in once; replayed on a new sign-in, it does not.
    options = (await hosted_options(flow, fields)).json()
    assertion = json.dumps(alices.get(options))
    assert (await answer(fields, credential=assertion)).status_code == 303
    again = form_fields(await code_form(flow, client_id, challenge, prompt="login"))
    replayed = await answer(again, credential=assertion)
    for response in (bobs_key, replayed):
        assert response.status_code == wrong_code.status_code, response.text
        assert re.findall(r'role="alert"[^>]*>([^<]+)', response.text) == re.findall(
            r'role="alert"[^>]*>([^<]+)', wrong_code.text
        )
        assert offers_passkey(response)
    failed = await hosted_events(flow, audit.MFA_FAILED)
    assert sorted(e.details["method"] for e in failed if e.details) == [
        "passkey",
        "passkey",
        "totp",
    ]

    # Not an answer at all (unreadable, or with a code besides): asked again, nothing counted.
    for factor in (
        {"credential": "not json"},
        {"credential": "[1]"},
        {"credential": assertion, "code": "123456"},
    ):
        unread = await answer(again, **factor)
        assert unread.status_code == 400 and "Enter the code" in unread.text
    assert len(await hosted_events(flow, audit.MFA_FAILED)) == 3

    # Wrong passkeys use up the mfa_token's attempts as wrong codes do.
    for _ in range(4):
        options = (await hosted_options(flow, again)).json()
        assert (await answer(again, credential=json.dumps(bobs.get(options)))).status_code == 401
    out = await hosted_options(flow, again)
    assert out.status_code == 401 and out.json()["error"] == "invalid_mfa_token"
    expired = await answer(again, credential=json.dumps(alices.get(options)))
    assert expired.status_code == 401 and '<label for="password">' in expired.text
