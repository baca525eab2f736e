"""Passkeys (WebAuthn): registration, passwordless login, listing and removal, driven by a
software authenticator written here (attestation "none", ES256 assertions)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import uuid
from typing import Any

import anyio
import cbor2
import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authsvc.services import audit
from tests.conftest import Harness

pytestmark = pytest.mark.anyio

RP_ID = "auth.test"  # the test issuer's host (tests/conftest.py)
ORIGIN = "https://auth.test"

# Authenticator data flags (WebAuthn L3 section 6.1).
UP, UV, AT = 0x01, 0x04, 0x40


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class SoftAuthenticator:
    """One discoverable ES256 credential, as a platform authenticator would hold it."""

    def __init__(self, *, counting: bool = True) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(16)
        self.counter = 0
        self.counting = counting
        self.user_handle = b""

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: -7,  # alg: ES256
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def create(self, options: dict[str, Any], *, origin: str = ORIGIN) -> dict[str, Any]:
        self.user_handle = unb64(options["user"]["id"])
        client_data = json.dumps(
            {"type": "webauthn.create", "challenge": options["challenge"], "origin": origin}
        ).encode()
        auth_data = (
            hashlib.sha256(options["rp"]["id"].encode()).digest()
            + bytes([UP | UV | AT])
            + struct.pack(">I", self.counter)
            + bytes(16)  # AAGUID
            + struct.pack(">H", len(self.credential_id))
            + self.credential_id
            + self._cose_key()
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": b64(self.credential_id),
            "rawId": b64(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(client_data),
                "attestationObject": b64(attestation),
                "transports": ["internal", "bogus"],
            },
            "clientExtensionResults": {},
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str = ORIGIN,
        flags: int = UP | UV,
        counter: int | None = None,
    ) -> dict[str, Any]:
        if counter is None:
            self.counter += 1 if self.counting else 0
            counter = self.counter
        client_data = json.dumps(
            {"type": "webauthn.get", "challenge": options["challenge"], "origin": origin}
        ).encode()
        auth_data = (
            hashlib.sha256(options["rpId"].encode()).digest()
            + bytes([flags])
            + struct.pack(">I", counter)
        )
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64(self.credential_id),
            "rawId": b64(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(client_data),
                "authenticatorData": b64(auth_data),
                "signature": b64(signature),
                "userHandle": b64(self.user_handle),
            },
            "clientExtensionResults": {},
        }


async def register(
    harness: Harness, access_token: str, authenticator: SoftAuthenticator, name: str = "Laptop"
) -> dict[str, Any]:
    options = await harness.client.post(
        "/auth/passkeys/register/options", headers=bearer(access_token)
    )
    assert options.status_code == 200, options.text
    response = await harness.client.post(
        "/auth/passkeys/register/verify",
        json={"credential": authenticator.create(options.json()), "name": name},
        headers=bearer(access_token),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login_options(harness: Harness) -> dict[str, Any]:
    response = await harness.client.post("/auth/passkeys/login/options")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


async def login_verify(harness: Harness, credential: dict[str, Any]) -> Any:
    return await harness.client.post("/auth/passkeys/login/verify", json={"credential": credential})


async def events(harness: Harness, event: str) -> list[Any]:
    async with harness.state.database.read() as db:
        return list(await audit.find(db, event=event))


async def test_register_then_log_in_without_a_password(harness: Harness) -> None:
    user_id = await harness.create_user()
    tokens = await harness.login()
    authenticator = SoftAuthenticator()
    options = (
        await harness.client.post(
            "/auth/passkeys/register/options", headers=bearer(tokens["access_token"])
        )
    ).json()
    assert options["rp"] == {"id": RP_ID, "name": "authsvc"}
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert unb64(options["user"]["id"]) == uuid.UUID(user_id).bytes
    assert options["excludeCredentials"] == []

    created = await register(harness, tokens["access_token"], authenticator)
    assert created["name"] == "Laptop" and created["transports"] == ["internal"]
    assert created["last_used_at"] is None

    options = await login_options(harness)
    assert options["rpId"] == RP_ID and options["userVerification"] == "required"
    assert "allowCredentials" not in options or options["allowCredentials"] == []
    harness.clock.advance(5)
    response = await login_verify(harness, authenticator.get(options))
    assert response.status_code == 200, response.text
    pair = response.json()
    assert set(pair) >= {"access_token", "refresh_token", "expires_in"}
    # RFC 8176: a hardware-secured key, the user verified.
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["amr"] == ["hwk", "user"]
    me = await harness.me(pair["access_token"])
    assert me.status_code == 200 and me.json()["username"] == "alice"
    assert (await harness.refresh(pair["refresh_token"])).status_code == 200

    listed = (
        await harness.client.get("/auth/passkeys", headers=bearer(pair["access_token"]))
    ).json()["passkeys"]
    assert [p["id"] for p in listed] == [created["id"]]
    assert listed[0]["last_used_at"] is not None

    # A second registration excludes the first credential.
    again = (
        await harness.client.post(
            "/auth/passkeys/register/options", headers=bearer(pair["access_token"])
        )
    ).json()
    assert [c["id"] for c in again["excludeCredentials"]] == [b64(authenticator.credential_id)]

    assert len(await events(harness, audit.PASSKEY_REGISTERED)) == 1
    logins = await events(harness, audit.LOGIN_SUCCEEDED)
    assert any((e.details or {}).get("method") == "passkey" for e in logins)


async def test_a_credential_id_is_registered_once_to_anyone(harness: Harness) -> None:
    await harness.create_user()
    await harness.create_user("bob")
    authenticator = SoftAuthenticator()
    await register(harness, (await harness.login())["access_token"], authenticator)
    alices_handle = authenticator.user_handle
    for name in ("bob", "alice"):
        access = (await harness.login(name))["access_token"]
        options = await harness.client.post(
            "/auth/passkeys/register/options", headers=bearer(access)
        )
        taken = await harness.client.post(
            "/auth/passkeys/register/verify",
            json={"credential": authenticator.create(options.json()), "name": "Copy"},
            headers=bearer(access),
        )
        assert taken.status_code == 400 and taken.json()["error"] == "passkey_invalid", taken.text
        listed = await harness.client.get("/auth/passkeys", headers=bearer(access))
        assert [p["name"] for p in listed.json()["passkeys"]] == (
            [] if name == "bob" else ["Laptop"]
        )
    # The credential still signs in its first owner.
    authenticator.user_handle = alices_handle
    signed_in = await login_verify(harness, authenticator.get(await login_options(harness)))
    assert signed_in.status_code == 200, signed_in.text
    assert (await harness.me(signed_in.json()["access_token"])).json()["username"] == "alice"


async def test_a_challenge_is_used_once_even_when_the_response_fails(harness: Harness) -> None:
    await harness.create_user()
    authenticator = SoftAuthenticator()
    await register(harness, (await harness.login())["access_token"], authenticator)

    options = await login_options(harness)
    assertion = authenticator.get(options)
    assert (await login_verify(harness, assertion)).status_code == 200
    replayed = await login_verify(harness, assertion)
    assert replayed.status_code == 401 and replayed.json()["error"] == "passkey_invalid"

    # A failed response spends its challenge too: a second, valid answer to it is refused.
    options = await login_options(harness)
    wrong = await login_verify(harness, authenticator.get(options, origin="https://evil.test"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "passkey_invalid"
    retry = await login_verify(harness, authenticator.get(options))
    assert retry.status_code == 401


async def test_wrong_origin_rp_and_missing_user_verification_are_refused(
    harness: Harness,
) -> None:
    await harness.create_user()
    authenticator = SoftAuthenticator()
    await register(harness, (await harness.login())["access_token"], authenticator)
    bad = [
        authenticator.get(await login_options(harness), origin="https://auth.test.evil"),
        authenticator.get({**(await login_options(harness)), "rpId": "evil.test"}),
        authenticator.get(await login_options(harness), flags=UP),  # no UV
    ]
    for assertion in bad:
        response = await login_verify(harness, assertion)
        assert response.status_code == 401, response.text
        assert response.json() == {
            "error": "passkey_invalid",
            "message": "The passkey could not be verified.",
        }
    failures = await events(harness, audit.LOGIN_FAILED)
    assert len(failures) == 3 and all(e.details["method"] == "passkey" for e in failures)


async def test_expired_challenge_is_refused(harness: Harness) -> None:
    await harness.create_user()
    authenticator = SoftAuthenticator()
    await register(harness, (await harness.login())["access_token"], authenticator)
    options = await login_options(harness)
    harness.clock.advance(harness.state.settings.passkey_challenge_ttl + 1)
    assert (await login_verify(harness, authenticator.get(options))).status_code == 401


async def test_counter_going_backwards_is_refused_and_audited(harness: Harness) -> None:
    user_id = await harness.create_user()
    authenticator = SoftAuthenticator()
    await register(harness, (await harness.login())["access_token"], authenticator)
    ok = await login_verify(harness, authenticator.get(await login_options(harness), counter=5))
    assert ok.status_code == 200
    for counter in (5, 3, 0):  # equal, lower, and a counter that stopped counting
        clone = authenticator.get(await login_options(harness), counter=counter)
        response = await login_verify(harness, clone)
        assert response.status_code == 401 and response.json()["error"] == "passkey_invalid"
    regressed = await events(harness, audit.PASSKEY_COUNTER_REGRESSED)
    assert len(regressed) == 3
    assert str(regressed[0].user_id) == user_id
    assert {e.details["stored"] for e in regressed} == {5}
    # The genuine authenticator, moving on, still works.
    assert (
        await login_verify(harness, authenticator.get(await login_options(harness), counter=6))
    ).status_code == 200


async def test_authenticators_without_a_counter_keep_working(harness: Harness) -> None:
    await harness.create_user()
    authenticator = SoftAuthenticator(counting=False)
    await register(harness, (await harness.login())["access_token"], authenticator)
    for _ in range(2):
        response = await login_verify(harness, authenticator.get(await login_options(harness)))
        assert response.status_code == 200, response.text


async def test_registration_challenge_is_bound_to_its_user(harness: Harness) -> None:
    await harness.create_user()
    await harness.create_user("bob")
    alice = await harness.login()
    bob = await harness.login("bob")
    options = (
        await harness.client.post(
            "/auth/passkeys/register/options", headers=bearer(alice["access_token"])
        )
    ).json()
    response = await harness.client.post(
        "/auth/passkeys/register/verify",
        json={"credential": SoftAuthenticator().create(options)},
        headers=bearer(bob["access_token"]),
    )
    assert response.status_code == 400 and response.json()["error"] == "passkey_invalid"
    # A login challenge does not register, nor a wrong origin.
    login = await login_options(harness)
    for credential in (
        SoftAuthenticator().create({**options, "challenge": login["challenge"]}),
        SoftAuthenticator().create(
            (
                await harness.client.post(
                    "/auth/passkeys/register/options", headers=bearer(alice["access_token"])
                )
            ).json(),
            origin="https://evil.test",
        ),
    ):
        response = await harness.client.post(
            "/auth/passkeys/register/verify",
            json={"credential": credential},
            headers=bearer(alice["access_token"]),
        )
        assert response.status_code == 400, response.text
    assert (await harness.client.post("/auth/passkeys/register/options")).status_code == 401


async def test_remove_own_passkey_and_not_someone_elses(harness: Harness) -> None:
    await harness.create_user()
    await harness.create_user("bob")
    alice = await harness.login()
    bob = await harness.login("bob")
    alices_key, bobs_key = SoftAuthenticator(), SoftAuthenticator()
    await register(harness, alice["access_token"], alices_key)
    bobs = await register(harness, bob["access_token"], bobs_key)
    for target in (bobs["id"], str(uuid.uuid4()), "not-a-uuid"):
        response = await harness.client.delete(
            f"/auth/passkeys/{target}", headers=bearer(alice["access_token"])
        )
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "not_found"
    assert (await login_verify(harness, bobs_key.get(await login_options(harness)))).is_success

    removed = await harness.client.delete(
        f"/auth/passkeys/{bobs['id']}", headers=bearer(bob["access_token"])
    )
    assert removed.status_code == 204
    assert (await harness.client.get("/auth/passkeys", headers=bearer(bob["access_token"]))).json()[
        "passkeys"
    ] == []
    gone = await login_verify(harness, bobs_key.get(await login_options(harness)))
    assert gone.status_code == 401
    assert len(await events(harness, audit.PASSKEY_REMOVED)) == 1


async def test_disabled_user_cannot_log_in_with_a_passkey(harness: Harness) -> None:
    await harness.create_user()
    authenticator = SoftAuthenticator()
    await register(harness, (await harness.login())["access_token"], authenticator)
    async with harness.state.database.transaction() as db:
        user = await harness.state.users.get(db, "alice")
        user.is_active = False
    response = await login_verify(harness, authenticator.get(await login_options(harness)))
    assert response.status_code == 401 and response.json()["error"] == "passkey_invalid"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
b64_text = st.binary(max_size=80).map(b64)


Mutation = tuple[str, str, Any]

# How a real response gets mangled: a response member replaced by noise, a member's bytes cut
# short or with a byte flipped, a top-level member replaced, or the whole thing noise.
mutations = st.one_of(
    st.tuples(st.just("replace"), st.text(max_size=20), json_values | b64_text),
    st.tuples(st.just("cut"), st.text(max_size=20), st.integers(0, 300)),
    st.tuples(st.just("flip"), st.text(max_size=20), st.integers(0, 300)),
    st.tuples(st.just("top"), st.sampled_from(["id", "rawId", "type", "response"]), json_values),
    st.tuples(st.just("noise"), st.just(""), st.dictionaries(st.text(max_size=8), json_values)),
)


def mutate(real: dict[str, Any], mutation: Mutation) -> Any:
    kind, member, value = mutation
    response = dict(real["response"])
    names = sorted(response)
    target = names[len(member) % len(names)]
    if kind == "noise":
        return value
    if kind == "top":
        return {**real, member: value}
    if kind == "replace":
        response[target] = value
    else:
        data = bytearray(unb64(response[target]) if isinstance(response[target], str) else b"")
        if kind == "cut":
            data = data[: value % (len(data) + 1)]
        elif data:
            data[value % len(data)] ^= 0x41
        response[target] = b64(bytes(data))
    return {**real, "response": response}


@pytest.mark.parametrize("ceremony", ["login", "register"])
async def test_garbage_responses_never_500(harness: Harness, ceremony: str) -> None:
    await harness.create_user()
    token = (await harness.login())["access_token"]
    authenticator = SoftAuthenticator()
    if ceremony == "login":
        await register(harness, token, authenticator)
    failures: list[str] = []

    async def attempt(mutation: Mutation) -> Any:
        # A fresh challenge each time, so the mangled response reaches the verification.
        if ceremony == "login":
            real = authenticator.get(await login_options(harness))
        else:
            options = await harness.client.post(
                "/auth/passkeys/register/options", headers=bearer(token)
            )
            real = SoftAuthenticator().create(options.json())
        return await harness.client.post(
            f"/auth/passkeys/{ceremony}/verify",
            json={"credential": mutate(real, mutation)},
            headers=bearer(token),
        )

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(mutation=mutations)
    def check(mutation: Mutation) -> None:
        response = anyio.from_thread.run(attempt, mutation)
        if response.status_code >= 500 or (
            not response.is_success and set(response.json()) != {"error", "message"}
        ):
            failures.append(f"{mutation!r} -> {response.status_code} {response.text}")

    await anyio.to_thread.run_sync(check)
    assert not failures, failures[:3]


@pytest.mark.parametrize(
    "settings_overrides", [{"rate_limit_enabled": True, "rate_limit_login_per_ip": 3}]
)
async def test_passkey_sign_in_shares_the_login_budget_per_address(harness: Harness) -> None:
    await harness.create_user()
    tokens = await harness.login()  # one of the three
    authenticator = SoftAuthenticator()
    await register(harness, tokens["access_token"], authenticator)
    options = await login_options(harness)  # two
    assert (await login_verify(harness, authenticator.get(options))).status_code == 200  # three
    refused = await harness.client.post("/auth/passkeys/login/options")
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    password = await harness.client.post(
        "/auth/login", json={"username": "alice", "password": "whatever it is"}
    )
    assert password.status_code == 429
