"""Opaque tokens (security/opaque.py) and everything else keyed by the server's HMAC keys.

The pinned values are what earlier versions stored or handed out for a fixed key: a change to a
token's format or digest would orphan every row already in a database, so it fails here first.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import pytest

from authsvc.config import Settings
from authsvc.jose.jws import b64url_encode
from authsvc.security.account_tokens import AccountTokens
from authsvc.security.authorization_codes import AuthorizationCodes
from authsvc.security.csrf import CsrfTokens
from authsvc.security.mfa import OneTimeSecrets
from authsvc.security.opaque import OpaqueTokens
from authsvc.security.refresh_tokens import RefreshTokens
from authsvc.security.secrets import (
    HmacKeyName,
    HmacKeys,
    KeyEncryptionKeys,
    ServerSecrets,
    new_kek,
)
from authsvc.services.clients import ClientService
from authsvc.services.dpop import DPoPService

BODY = b64url_encode(bytes(range(32)))


@pytest.fixture
def server_secrets() -> ServerSecrets:
    """Each HMAC key is the SHA-256 of its attribute name: fixed, and different per key."""
    keys = HmacKeys(
        **{attr: hashlib.sha256(attr.encode()).digest() for attr in HmacKeys.NAMES.values()}
    )
    secrets = ServerSecrets(KeyEncryptionKeys(new_kek()))
    secrets.use(keys)
    return secrets


def _kinds(secrets: ServerSecrets, tmp_path: Path) -> dict[str, OpaqueTokens]:
    return {
        "rt_": RefreshTokens(secrets),
        "ac_": AuthorizationCodes(secrets),
        "at_": AccountTokens(secrets),
        "mfa_": OneTimeSecrets(secrets),
        "cs_": ClientService(Settings(data_dir=tmp_path), secrets).client_secrets,
    }


PINNED = {
    "rt_": "3f6d616355c11eab3eb0c3f8959c9e7b07e67823b3b69286b54d5db850958143",
    "ac_": "6deb401b0d415e08acef3c94171e25255deb49d68333afe3a8ee53e5e732556d",
    "at_": "4715b9caa66eba2d22b29a4a1d25072961e57153847b500f8629ade5d8d60929",
    "mfa_": "0526e4e77501d93cc9a1641b7003e52f322305c535c29c04806af04ddf09c287",
    "cs_": "0b9154371c4ac625bdfd137adb21555a4f3bc65ece6bfde140a0fa7af6963d20",
}


def test_key_names_are_the_hmac_keys_attributes() -> None:
    assert set(get_args(HmacKeyName)) == set(HmacKeys.NAMES.values())


@pytest.mark.parametrize("prefix", PINNED)
def test_digest_of_a_known_token_is_pinned(
    prefix: str, server_secrets: ServerSecrets, tmp_path: Path
) -> None:
    tokens = _kinds(server_secrets, tmp_path)[prefix]
    assert tokens.prefix == prefix
    assert tokens.well_formed(prefix + BODY)
    assert tokens.digest(prefix + BODY).hex() == PINNED[prefix]


@pytest.mark.parametrize("prefix", PINNED)
def test_new_tokens_have_the_prefix_and_256_random_bits(
    prefix: str, server_secrets: ServerSecrets, tmp_path: Path
) -> None:
    tokens = _kinds(server_secrets, tmp_path)[prefix]
    one, two = tokens.new(), tokens.new()
    assert one != two
    assert one.startswith(prefix) and len(one) == len(prefix) + 43
    assert tokens.well_formed(one) and tokens.well_formed(two)


def test_refresh_successor_is_pinned(server_secrets: ServerSecrets) -> None:
    tokens = RefreshTokens(server_secrets)
    successor = tokens.successor("rt_" + BODY)
    assert successor == "rt_9TJe6PmrkBDOTE3pdGnhdwM3g9L6VdQm268iB_c9oWU"
    assert tokens.well_formed(successor)


def test_recovery_code_digest_is_pinned(server_secrets: ServerSecrets) -> None:
    one_time = OneTimeSecrets(server_secrets)
    code = one_time.normalize_recovery_code("ABCDE FGHJK")
    assert one_time.digest(code).hex() == (
        "9a9e4b8a4cce47bb243b8409fc3fc0fb70815b770b50af4b1e2ca1397e27150a"
    )


def test_csrf_form_token_is_pinned(server_secrets: ServerSecrets) -> None:
    csrf = CsrfTokens(server_secrets)
    assert csrf.form_token(BODY) == "NkD5X4_tNot8WalAeU7DS_g7KSd5HMfgHQvFsqs4hOs"
    assert csrf.check(BODY, "NkD5X4_tNot8WalAeU7DS_g7KSd5HMfgHQvFsqs4hOs")


def test_dpop_nonce_is_pinned(server_secrets: ServerSecrets, tmp_path: Path) -> None:
    # Every process must hand out and accept the same nonce, old and new versions alike.
    settings = Settings(data_dir=tmp_path, dpop_proof_max_age_seconds=60)
    nonce = DPoPService(settings, server_secrets).nonce(datetime(2026, 1, 1, tzinfo=UTC))
    assert nonce == "hR3rwXpojIY-bgTTf0PRQpd-"


@pytest.mark.parametrize(
    "token",
    [
        "",
        BODY,  # no prefix
        "ac_" + BODY,  # another kind's prefix
        "rt_" + BODY[:-1],
        "rt_" + BODY + "A",
        "rt_" + BODY + "\n",
        "rt_" + BODY[:-1] + "=",
        "rt_" + BODY[:-1] + "é",
        "RT_" + BODY,
    ],
)
def test_malformed_tokens_are_refused(token: str, server_secrets: ServerSecrets) -> None:
    assert not RefreshTokens(server_secrets).well_formed(token)


def test_each_kind_has_its_own_key(server_secrets: ServerSecrets, tmp_path: Path) -> None:
    digests = {tokens.digest(BODY) for tokens in _kinds(server_secrets, tmp_path).values()}
    assert len(digests) == len(PINNED)


def test_digests_compare(server_secrets: ServerSecrets) -> None:
    tokens = AccountTokens(server_secrets)
    token = tokens.new()
    assert tokens.same_digest(tokens.digest(token), tokens.digest(token))
    assert not tokens.same_digest(tokens.digest(token), tokens.digest(tokens.new()))


def test_keys_are_read_when_used_not_when_built() -> None:
    secrets = ServerSecrets(KeyEncryptionKeys(new_kek()))
    tokens = RefreshTokens(secrets)  # built before the keys are loaded, as build_state does
    with pytest.raises(RuntimeError):
        tokens.digest("rt_" + BODY)
    secrets.use(HmacKeys.generate())
    assert len(tokens.digest("rt_" + BODY)) == 32
