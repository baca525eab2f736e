"""DPoP (RFC 9449) at the server: proofs at the token endpoints bind access tokens (`cnf.jkt`)
and public clients' sessions; resource endpoints take a bound token only under the DPoP scheme
with a fresh proof for that request."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import jwt
import pytest

from authsvc.config import Settings
from authsvc.jose.dpop import (
    InvalidProof,
    MemoryReplayCache,
    normalize_uri,
    thumbprint,
    verify_proof,
)
from authsvc.security.secrets import KeyEncryptionKeys, ServerSecrets, new_kek
from authsvc.services.dpop import DPoPService
from tests.conftest import PASSWORD, Harness
from tests.dpop_keys import ProofKey
from tests.test_oauth import basic, make_client

pytestmark = pytest.mark.anyio

ISSUER = "https://auth.test"  # conftest's; the test client itself talks to http://testserver
ME = ISSUER + "/auth/me"


def claims_of(access_token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return decoded


async def dpop_login(harness: Harness, key: ProofKey) -> dict[str, Any]:
    response = await harness.client.post(
        "/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"DPoP": key.proof("POST", ISSUER + "/auth/login")},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def me(
    harness: Harness, token: str, proof: str | None, scheme: str = "DPoP"
) -> httpx.Response:
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return await harness.client.get("/auth/me", headers=headers)


def assert_dpop_challenge(response: httpx.Response, error: str) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("DPoP ")
    assert f'error="{error}"' in challenge
    assert 'algs="ES256 RS256"' in challenge


# -- token endpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_login_with_proof_binds_the_access_token_to_the_key(
    harness: Harness, alg: str
) -> None:
    await harness.create_user()
    key = ProofKey(alg)
    body = await dpop_login(harness, key)
    assert body["token_type"] == "DPoP"
    assert claims_of(body["access_token"])["cnf"] == {"jkt": key.jkt}
    token = body["access_token"]
    response = await me(harness, token, key.proof("GET", ME, access_token=token))
    assert response.status_code == 200, response.text
    assert response.json()["username"] == "alice"


async def test_login_without_proof_stays_bearer(harness: Harness) -> None:
    await harness.create_user()
    body = await harness.login()
    assert body["token_type"] == "Bearer"
    assert "cnf" not in claims_of(body["access_token"])
    assert (await harness.me(body["access_token"])).status_code == 200


async def test_bad_proof_at_the_token_endpoint_is_400_invalid_dpop_proof(harness: Harness) -> None:
    await harness.create_user()
    key = ProofKey()
    for proof in (
        key.proof("GET", ISSUER + "/auth/login"),  # wrong method
        key.proof("POST", "http://testserver/auth/login"),  # the Host header's name, not ours
        key.proof("POST", ISSUER + "/auth/login", header={"typ": "JWT"}),
        "not.a.jwt",
    ):
        response = await harness.client.post(
            "/auth/login", json={"username": "alice", "password": PASSWORD}, headers={"DPoP": proof}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_dpop_proof"


async def test_replayed_proof_at_the_token_endpoint_is_refused(harness: Harness) -> None:
    await harness.create_user()
    proof = ProofKey().proof("POST", ISSUER + "/auth/login")
    login = {"username": "alice", "password": PASSWORD}
    first = await harness.client.post("/auth/login", json=login, headers={"DPoP": proof})
    assert first.status_code == 200
    again = await harness.client.post("/auth/login", json=login, headers={"DPoP": proof})
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_dpop_proof"


async def test_oauth_token_endpoint_binds_public_client_tokens(harness: Harness) -> None:
    await harness.create_user()
    client_id, _ = await make_client(harness)
    key = ProofKey("RS256")
    url = ISSUER + "/oauth/token"
    form = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    response = await harness.client.post(
        "/oauth/token",
        data={**form, "client_id": client_id},
        headers={"DPoP": key.proof("POST", url)},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    assert claims_of(body["access_token"])["cnf"]["jkt"] == key.jkt
    refresh = {
        "grant_type": "refresh_token",
        "refresh_token": body["refresh_token"],
        "client_id": client_id,
    }

    # The refresh token is bound too (RFC 9449 section 5): useless without the key.
    stolen = await harness.client.post("/oauth/token", data=refresh)
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"
    other = await harness.client.post(
        "/oauth/token", data=refresh, headers={"DPoP": ProofKey().proof("POST", url)}
    )
    assert other.status_code == 400
    assert other.json()["error"] == "invalid_grant"

    bad = await harness.client.post(
        "/oauth/token", data=refresh, headers={"DPoP": key.proof("POST", ISSUER + "/oauth/revoke")}
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_dpop_proof"

    good = await harness.client.post(
        "/oauth/token", data=refresh, headers={"DPoP": key.proof("POST", url)}
    )
    assert good.status_code == 200, good.text
    assert good.json()["token_type"] == "DPoP"
    assert claims_of(good.json()["access_token"])["cnf"]["jkt"] == key.jkt


async def test_confidential_client_refresh_token_is_not_bound(harness: Harness) -> None:
    """RFC 9449 section 5: a confidential client's refresh token is bound to its credentials."""
    await harness.create_user()
    client_id, secret = await make_client(harness, confidential=True)
    assert secret is not None
    creds = {"client_id": client_id, "client_secret": secret}
    key = ProofKey()
    first = await harness.client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": "alice", "password": PASSWORD, **creds},
        headers={"DPoP": key.proof("POST", ISSUER + "/oauth/token")},
    )
    assert first.status_code == 200, first.text
    assert first.json()["token_type"] == "DPoP"
    again = await harness.client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first.json()["refresh_token"],
            **creds,
        },
    )
    assert again.status_code == 200, again.text
    assert again.json()["token_type"] == "Bearer"
    assert "cnf" not in claims_of(again.json()["access_token"])


async def test_bound_session_refreshes_only_with_its_key(harness: Harness) -> None:
    await harness.create_user()
    key = ProofKey()
    body = await dpop_login(harness, key)
    token = body["refresh_token"]
    url = ISSUER + "/auth/refresh"

    assert (await harness.refresh(token)).status_code == 401
    other = await harness.client.post(
        "/auth/refresh",
        json={"refresh_token": token},
        headers={"DPoP": ProofKey().proof("POST", url)},
    )
    assert other.status_code == 401
    assert other.json()["error"] == "invalid_refresh_token"

    # Neither attempt spent the token nor revoked the session: the holder of the key refreshes.
    good = await harness.client.post(
        "/auth/refresh", json={"refresh_token": token}, headers={"DPoP": key.proof("POST", url)}
    )
    assert good.status_code == 200, good.text
    fresh = good.json()
    assert fresh["token_type"] == "DPoP"
    assert claims_of(fresh["access_token"])["cnf"]["jkt"] == key.jkt
    assert (
        await me(
            harness, fresh["access_token"], key.proof("GET", ME, access_token=fresh["access_token"])
        )
    ).status_code == 200

    # Within the grace window the same successor is answered again, to the key's holder only;
    # past it, a spent bound token presented with the key is a reuse: the session is revoked.
    retry = await harness.client.post(
        "/auth/refresh", json={"refresh_token": token}, headers={"DPoP": key.proof("POST", url)}
    )
    assert retry.status_code == 200
    assert retry.json()["refresh_token"] == fresh["refresh_token"]
    harness.clock.advance(11)
    reused = await harness.client.post(
        "/auth/refresh", json={"refresh_token": token}, headers={"DPoP": key.proof("POST", url)}
    )
    assert reused.status_code == 401
    assert reused.json()["error"] == "refresh_token_reused"


# -- resource endpoints ------------------------------------------------------------------------


async def test_bound_token_as_bearer_is_refused(harness: Harness) -> None:
    await harness.create_user()
    body = await dpop_login(harness, ProofKey())
    response = await me(harness, body["access_token"], None, scheme="Bearer")
    assert_dpop_challenge(response, "invalid_token")


async def test_replayed_proof_is_refused(harness: Harness) -> None:
    await harness.create_user()
    key = ProofKey()
    token = (await dpop_login(harness, key))["access_token"]
    proof = key.proof("GET", ME, access_token=token)
    assert (await me(harness, token, proof)).status_code == 200
    assert_dpop_challenge(await me(harness, token, proof), "invalid_dpop_proof")


async def test_proof_for_another_url_or_method_is_refused(harness: Harness) -> None:
    await harness.create_user()
    key = ProofKey()
    token = (await dpop_login(harness, key))["access_token"]
    for proof in (
        key.proof("POST", ME, access_token=token),
        key.proof("GET", ISSUER + "/auth/sessions", access_token=token),
        key.proof("GET", "https://elsewhere.test/auth/me", access_token=token),
        key.proof("GET", "http://testserver/auth/me", access_token=token),
    ):
        assert_dpop_challenge(await me(harness, token, proof), "invalid_dpop_proof")


async def test_htu_is_compared_after_normalisation(harness: Harness) -> None:
    await harness.create_user()
    key = ProofKey()
    token = (await dpop_login(harness, key))["access_token"]
    proof = key.proof(
        "GET", "HTTPS://Auth.Test:443/auth/%6De?query=ignored#frag", access_token=token
    )
    assert (await me(harness, token, proof)).status_code == 200


async def test_stale_or_future_proof_is_refused(harness: Harness) -> None:
    await harness.create_user()
    key = ProofKey()
    token = (await dpop_login(harness, key))["access_token"]
    now = harness.clock.now().timestamp()
    for iat in (now - 61, now + 60):
        proof = key.proof("GET", ME, access_token=token, iat=iat)
        assert_dpop_challenge(await me(harness, token, proof), "invalid_dpop_proof")


async def test_wrong_ath_is_refused(harness: Harness) -> None:
    await harness.create_user()
    key = ProofKey()
    token = (await dpop_login(harness, key))["access_token"]
    other = (await dpop_login(harness, key))["access_token"]
    assert_dpop_challenge(
        await me(harness, token, key.proof("GET", ME, access_token=other)), "invalid_dpop_proof"
    )
    assert_dpop_challenge(await me(harness, token, key.proof("GET", ME)), "invalid_dpop_proof")


async def test_proof_by_another_key_is_refused(harness: Harness) -> None:
    await harness.create_user()
    token = (await dpop_login(harness, ProofKey()))["access_token"]
    response = await me(harness, token, ProofKey().proof("GET", ME, access_token=token))
    assert_dpop_challenge(response, "invalid_token")


async def test_dpop_scheme_without_proof_is_refused(harness: Harness) -> None:
    await harness.create_user()
    token = (await dpop_login(harness, ProofKey()))["access_token"]
    assert_dpop_challenge(await me(harness, token, None), "invalid_token")


async def test_unbound_token_under_the_dpop_scheme_is_refused(harness: Harness) -> None:
    """RFC 9449 section 4.3 step 12: there is no bound key for the proof's key to match."""
    await harness.create_user()
    token = (await harness.login())["access_token"]
    key = ProofKey()
    assert_dpop_challenge(
        await me(harness, token, key.proof("GET", ME, access_token=token)), "invalid_token"
    )


async def test_sessions_api_takes_dpop_tokens(harness: Harness) -> None:
    await harness.create_user()
    key = ProofKey()
    token = (await dpop_login(harness, key))["access_token"]
    url = ISSUER + "/auth/sessions"
    response = await harness.client.get(
        "/auth/sessions",
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": key.proof("GET", url, access_token=token),
        },
    )
    assert response.status_code == 200, response.text
    bearer = await harness.client.get(
        "/auth/sessions", headers={"Authorization": f"Bearer {token}"}
    )
    assert_dpop_challenge(bearer, "invalid_token")


async def test_two_dpop_headers_are_refused(harness: Harness) -> None:
    await harness.create_user()
    key = ProofKey()
    token = (await dpop_login(harness, key))["access_token"]
    headers = [
        ("Authorization", f"DPoP {token}"),
        ("DPoP", key.proof("GET", ME, access_token=token)),
        ("DPoP", key.proof("GET", ME, access_token=token)),
    ]
    response = await harness.client.get("/auth/me", headers=headers)
    assert response.status_code == 400


# -- the proof itself (authsvc.jose.dpop) ------------------------------------------------------


def _verify(proof: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "method": "GET",
        "uri": ME,
        "now": overrides.pop("now", None) or time.time(),
        "max_age": 60.0,
        "leeway": 5.0,
    }
    values.update(overrides)
    return verify_proof(proof, **values)


def test_rfc7638_thumbprint_example() -> None:
    # RFC 7638 section 3.1.
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1"
            "L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4"
            "QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbO"
            "pbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csF"
            "Cur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_proof_verifies_and_names_its_key(alg: str) -> None:
    key = ProofKey(alg)
    proof = _verify(key.proof("GET", ME, access_token="tok"), access_token="tok")
    assert proof.jkt == key.jkt == thumbprint(key.jwk)


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        ({"typ": "JWT"}, {}),
        ({"alg": "HS256"}, {}),
        ({"alg": "none"}, {}),
        ({"alg": "RS256"}, {}),  # an EC key claiming RS256
        ({"crit": ["exp"]}, {}),
        ({"jku": "https://evil.test/jwks"}, {}),
        ({}, {"htm": "get"}),
        ({}, {"jti": ""}),
        ({}, {"iat": "123"}),
        ({}, {"iat": True}),
    ],
)
def test_malformed_proofs_are_refused(header: dict[str, Any], claims: dict[str, Any]) -> None:
    key = ProofKey()
    with pytest.raises(InvalidProof):
        _verify(key.proof("GET", ME, header=header, **claims))


def test_private_key_in_the_jwk_is_refused() -> None:
    key = ProofKey()
    assert isinstance(
        key.private,
        __import__("cryptography").hazmat.primitives.asymmetric.ec.EllipticCurvePrivateKey,
    )
    private_jwk = {**key.jwk, "d": "AAAA"}
    with pytest.raises(InvalidProof):
        _verify(key.proof("GET", ME, header={"jwk": private_jwk}))


def test_tampered_signature_is_refused() -> None:
    key = ProofKey()
    header, payload, signature = key.proof("GET", ME).split(".")
    other = ProofKey().proof("GET", ME).split(".")[1]
    with pytest.raises(InvalidProof):
        _verify(f"{header}.{other}.{signature}")
    assert payload


def test_nonce_when_required() -> None:
    key = ProofKey()
    with pytest.raises(InvalidProof):
        _verify(key.proof("GET", ME), nonce="n-1")
    assert _verify(key.proof("GET", ME, nonce="n-1"), nonce="n-1").nonce == "n-1"


def test_uri_normalisation() -> None:
    assert normalize_uri("HTTPS://Example.COM:443/a/%7e/%2f?q#f") == "https://example.com/a/~/%2F"
    assert normalize_uri("http://example.com") == "http://example.com/"
    assert normalize_uri("http://example.com:8080/x") == "http://example.com:8080/x"
    with pytest.raises(ValueError):
        normalize_uri("ftp://example.com/")


async def test_memory_replay_cache_is_bounded_and_expires() -> None:
    cache = MemoryReplayCache(max_entries=100)
    assert await cache.first_use("a", 10, 0)
    assert not await cache.first_use("a", 10, 5)
    assert await cache.first_use("a", 10, 11)  # expired
    for i in range(500):
        assert await cache.first_use(f"k{i}", 10, 20)
    assert len(cache._seen) <= 100


async def test_replay_cache_is_shared_through_redis(tmp_path: Any) -> None:
    prefix = f"authsvc:test:dpop:{secrets.token_hex(4)}:"
    settings = Settings(
        data_dir=tmp_path, redis_url="redis://127.0.0.1:6379/0", dpop_replay_key_prefix=prefix
    )
    keys = ServerSecrets(KeyEncryptionKeys(new_kek()))
    one, two = DPoPService(settings, keys), DPoPService(settings, keys)
    try:
        assert await one.cache.first_use("jti", 5, 0)
        assert not await two.cache.first_use("jti", 5, 0)
    finally:
        await one.close()
        await two.close()


async def test_redis_down_falls_back_to_process_memory(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")
    service = DPoPService(settings, ServerSecrets(KeyEncryptionKeys(new_kek())))
    try:
        assert await service.cache.first_use("jti", 5, 0)
        assert not await service.cache.first_use("jti", 5, 1)
    finally:
        await service.close()


async def test_metadata_lists_the_proof_algorithms(harness: Harness) -> None:
    doc = (await harness.client.get("/.well-known/oauth-authorization-server")).json()
    assert doc["dpop_signing_alg_values_supported"] == ["ES256", "RS256"]


async def test_introspection_shows_the_key_binding(harness: Harness) -> None:
    """RFC 9449 section 6.2: token_type DPoP and cnf.jkt."""
    await harness.create_user()
    client_id, secret = await make_client(harness, confidential=True)
    assert secret is not None
    key = ProofKey()
    issued = await harness.client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": "alice", "password": PASSWORD},
        headers={**basic(client_id, secret), "DPoP": key.proof("POST", ISSUER + "/oauth/token")},
    )
    assert issued.status_code == 200, issued.text
    described = await harness.client.post(
        "/oauth/introspect",
        data={"token": issued.json()["access_token"]},
        headers=basic(client_id, secret),
    )
    body = described.json()
    assert body["active"] is True
    assert body["token_type"] == "DPoP"
    assert body["cnf"] == {"jkt": key.jkt}


@pytest.mark.parametrize("settings_overrides", [{"dpop_nonce": True}])
async def test_server_nonce_is_required_when_enabled(harness: Harness) -> None:
    """RFC 9449 sections 8 and 9: use_dpop_nonce with the nonce in DPoP-Nonce, then accepted."""
    await harness.create_user()
    key = ProofKey()
    login = {"username": "alice", "password": PASSWORD}
    url = ISSUER + "/auth/login"
    first = await harness.client.post(
        "/auth/login", json=login, headers={"DPoP": key.proof("POST", url)}
    )
    assert first.status_code == 400
    assert first.json()["error"] == "use_dpop_nonce"
    nonce = first.headers["dpop-nonce"]
    stale = key.proof("POST", url, nonce="not-the-nonce")
    assert (
        await harness.client.post("/auth/login", json=login, headers={"DPoP": stale})
    ).status_code == 400
    ok = await harness.client.post(
        "/auth/login", json=login, headers={"DPoP": key.proof("POST", url, nonce=nonce)}
    )
    assert ok.status_code == 200, ok.text
    token = ok.json()["access_token"]

    refused = await me(harness, token, key.proof("GET", ME, access_token=token))
    assert_dpop_challenge(refused, "use_dpop_nonce")
    nonce = refused.headers["dpop-nonce"]
    assert (
        await me(harness, token, key.proof("GET", ME, access_token=token, nonce=nonce))
    ).status_code == 200


async def test_revoked_bound_token_gets_the_dpop_challenge(harness: Harness) -> None:
    await harness.create_user()
    key = ProofKey()
    token = (await dpop_login(harness, key))["access_token"]
    logout = await harness.client.post(
        "/auth/logout",
        json={},
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": key.proof("POST", ISSUER + "/auth/logout", access_token=token),
        },
    )
    assert logout.status_code == 204, logout.text
    assert_dpop_challenge(
        await me(harness, token, key.proof("GET", ME, access_token=token)), "invalid_token"
    )
