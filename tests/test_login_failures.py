"""Failed logins tell an attacker nothing, and over-long passwords are handled, not truncated.

Unknown user, wrong password and disabled user get the same status, body and headers, and take
the same time within noise (a statistical sanity check with the cheap test hash, not a
benchmark).
"""

from __future__ import annotations

import json
import statistics
import time

import httpx
import pytest

from tests.conftest import PASSWORD, Harness

pytestmark = pytest.mark.anyio

CASES = {
    "unknown user": ("nobody", PASSWORD),
    "wrong password": ("alice", "not the password"),
    "disabled user, right password": ("bob", PASSWORD),
    "disabled user, wrong password": ("bob", "not the password"),
}


async def _setup(harness: Harness) -> None:
    await harness.create_user("alice")
    await harness.create_user("bob")
    async with harness.state.database.transaction() as db:
        await harness.state.users.set_active(db, "bob", False, harness.clock.now())


async def _attempt(harness: Harness, username: str, password: str) -> httpx.Response:
    return await harness.client.post(
        "/auth/login", json={"username": username, "password": password}
    )


async def test_failed_logins_are_identical_in_status_body_and_headers(harness: Harness) -> None:
    await _setup(harness)
    answers = {}
    for name, (username, password) in CASES.items():
        response = await _attempt(harness, username, password)
        # Every answer carries its own request id; everything else must be identical.
        headers = sorted((k, v) for k, v in response.headers.items() if k != "x-request-id")
        answers[name] = (response.status_code, response.content, headers)
    first = next(iter(answers.values()))
    assert first[0] == 401
    for name, answer in answers.items():
        assert answer == first, name


# A hash that costs a few milliseconds, so that skipping it would stand out of the noise.
@pytest.mark.parametrize("settings_overrides", [{"argon2_memory_cost": 8192}])
async def test_failed_logins_take_the_same_time(harness: Harness) -> None:
    await _setup(harness)
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for username, password in CASES.values():  # warm up every path once
        await _attempt(harness, username, password)
    for _ in range(30):
        # Interleaved, so load from other processes on the box hits every case alike.
        for name, (username, password) in CASES.items():
            start = time.perf_counter()
            response = await _attempt(harness, username, password)
            samples[name].append(time.perf_counter() - start)
            assert response.status_code == 401
    medians = {name: statistics.median(values) for name, values in samples.items()}
    fastest, slowest = min(medians.values()), max(medians.values())
    # Every path does one password hash and the same reads; a missing hash (an early exit
    # for unknown names) would show as a large ratio even with the cheap test parameters.
    # Generous, for a loaded 2-core box: a skipped hash would roughly halve a median.
    assert slowest <= fastest * 1.5 + 0.003, medians


async def test_the_dummy_hash_costs_what_a_real_one_does(harness: Harness) -> None:
    """The unknown-user path verifies against a hash with the configured parameters."""
    passwords = harness.state.login.passwords
    real = await passwords.hash(PASSWORD)
    assert passwords._dummy_hash.split("$")[:4] == real.split("$")[:4]
    assert not passwords.context.needs_update(passwords._dummy_hash)
    assert await passwords.verify(PASSWORD, passwords._dummy_hash) == (False, None)


@pytest.mark.parametrize(
    "password",
    [
        "x" * 1025,  # over the policy maximum
        "x" * 4096,  # the largest a request may carry
        "\U0001f600" * 4096,  # 16 KiB of UTF-8: over passlib's byte limit
        "\x00" * 20,
    ],
    ids=["1025", "4096", "4096-emoji", "nul"],
)
async def test_long_or_odd_passwords_never_500(harness: Harness, password: str) -> None:
    await harness.create_user()
    response = await _attempt(harness, "alice", password)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_credentials"


async def test_lone_surrogates_in_json_never_500(harness: Harness) -> None:
    await harness.create_user()
    for field in ("password", "username"):
        body = {"username": "alice", "password": "x" * 10}
        raw = json.dumps(body).replace('"' + body[field] + '"', '"\\ud800\\udfff\\ud800 abc"')
        response = await harness.client.post(
            "/auth/login", content=raw.encode(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code in (400, 401), response.text


async def test_passwords_longer_than_a_request_may_carry_are_400(harness: Harness) -> None:
    response = await _attempt(harness, "alice", "x" * 4097)
    assert response.status_code == 400


async def test_long_passwords_are_not_truncated_into_collisions(harness: Harness) -> None:
    """No 72-byte (bcrypt) or other cut-off: only the exact password logs in."""
    longest = "p" * 1023 + "q"
    await harness.create_user("alice", longest)
    await harness.create_user("bob", "b" * 72 + "-tail-one")
    assert (await _attempt(harness, "alice", longest)).status_code == 200
    for wrong in (longest[:-1], longest[:-1] + "p", longest + "q", longest + "x" * 3000):
        assert (await _attempt(harness, "alice", wrong)).status_code == 401
    assert (await _attempt(harness, "bob", "b" * 72 + "-tail-one")).status_code == 200
    assert (await _attempt(harness, "bob", "b" * 72 + "-tail-two")).status_code == 401
    assert (await _attempt(harness, "bob", "b" * 72)).status_code == 401


async def test_passwords_are_compared_in_nfc(harness: Harness) -> None:
    await harness.create_user("alice", "caf\u00e9 au lait!")  # precomposed é
    response = await _attempt(harness, "alice", "cafe\u0301 au lait!")  # e + combining acute
    assert response.status_code == 200
