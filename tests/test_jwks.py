"""GET /.well-known/jwks.json, and verifying our tokens with a standard JOSE library."""

from __future__ import annotations

import jwt
import pytest

from tests.conftest import Harness

pytestmark = pytest.mark.anyio

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


async def test_jwks_publishes_public_keys_only(harness: Harness) -> None:
    response = await harness.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    keys = response.json()["keys"]
    assert len(keys) == 1
    key = keys[0]
    assert set(key) == {"kty", "kid", "use", "alg", "n", "e"}
    assert not PRIVATE_MEMBERS & set(key)
    assert (key["kty"], key["use"], key["alg"], key["e"]) == ("RSA", "sig", "RS256", "AQAB")
    modulus = int.from_bytes(jwt.utils.base64url_decode(key["n"]), "big")
    assert modulus.bit_length() >= 2048


async def test_access_token_verifies_against_jwks_with_pyjwt(harness: Harness) -> None:
    await harness.create_user()
    tokens = await harness.login()
    jwks = (await harness.client.get("/.well-known/jwks.json")).json()
    keyset = jwt.PyJWKSet.from_dict(jwks)
    kid = jwt.get_unverified_header(tokens["access_token"])["kid"]
    claims = jwt.decode(
        tokens["access_token"],
        keyset[kid].key,
        algorithms=["RS256"],
        audience="api.test",
        issuer="https://auth.test",
    )
    assert claims["sub"]


async def test_jwks_answers_head_like_get(harness: Harness) -> None:
    response = await harness.client.head("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["content-type"] == "application/jwk-set+json"
