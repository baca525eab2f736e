"""Public JWS test vectors against authsvc's one signature check (authsvc.jose), as each of its
two callers reaches it: the server (`AccessTokens`, whose keys are RS256 signing keys) and
`authsvc.verifier` (whose keys come from a JWKS).

Wycheproof (C2SP, tests/vectors, see its README.md): for each RS256 group the group's
public key and RS256 are pinned and only the signature is checked; `valid` cases must verify and
`invalid` ones must be refused. Every group for another algorithm (HS256, ES256, PS256, RS384,
...) or with a key not meant for RS256 signatures must be refused whole. RFC 7520 section 4.1
(RSA v1.5 signature, with the section 3.3 public key) must verify.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa

from authsvc.jose.jws import (
    CompactJWS,
    MalformedToken,
    decode_compact,
    public_key_from_jwk,
    verify_signature,
)
from authsvc.verifier.jwks import parse_jwks

VECTORS = Path(__file__).resolve().parent / "vectors"
WYCHEPROOF = VECTORS / "wycheproof_json_web_signature_test.json"


def _groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = json.loads(WYCHEPROOF.read_text())["testGroups"]
    return groups


def _server_key(jwk: dict[str, Any]) -> rsa.RSAPublicKey | None:
    # The server's key ring holds only RS256 signing keys: a JWK not meant for that is not one.
    try:
        return public_key_from_jwk(jwk)
    except MalformedToken:
        return None


def _verifier_key(jwk: dict[str, Any]) -> rsa.RSAPublicKey | None:
    # A resource server's keys are what its JWKS parsing keeps of the published set.
    kid = jwk.get("kid", "the-kid")
    return parse_jwks({"keys": [{"kid": kid, **jwk}]}).get(kid)


KeyFrom = Callable[[dict[str, Any]], rsa.RSAPublicKey | None]
CALLERS: dict[str, KeyFrom] = {"server": _server_key, "verifier": _verifier_key}


@pytest.fixture(params=list(CALLERS))
def key_from(request: pytest.FixtureRequest) -> KeyFrom:
    return CALLERS[request.param]


def _verify(jws: str, key: rsa.RSAPublicKey) -> CompactJWS:
    """What both callers run once they hold the key: decode, then check the signature."""
    parsed = decode_compact(jws)
    verify_signature(parsed, key)
    return parsed


def _verifies(key_from: KeyFrom, jwk: dict[str, Any] | None, jws: object) -> bool:
    """The caller's answer: its key from the JWK, then the signature; any refusal is False."""
    if jwk is None or not isinstance(jws, str):
        # No public key (symmetric groups carry only the secret) or JSON serialization:
        # nothing a verifier that takes compact RS256 tokens could accept.
        return False
    key = key_from(jwk)
    if key is None:
        return False
    try:
        _verify(jws, key)
    except (MalformedToken, InvalidSignature):
        return False
    return True


def _is_rs256_group(group: dict[str, Any]) -> bool:
    return bool(group.get("public", {}).get("alg") == "RS256")


def test_the_wycheproof_file_is_the_one_described() -> None:
    data = json.loads(WYCHEPROOF.read_text())
    assert data["numberOfTests"] == sum(len(g["tests"]) for g in data["testGroups"]) == 401
    rs256 = [g for g in data["testGroups"] if _is_rs256_group(g)]
    assert len(rs256) >= 3
    assert sum(t["result"] == "invalid" for g in rs256 for t in g["tests"]) > 200


@pytest.mark.parametrize(
    "group", [g for g in _groups() if _is_rs256_group(g)], ids=lambda g: g["comment"]
)
def test_wycheproof_rs256_groups(key_from: KeyFrom, group: dict[str, Any]) -> None:
    wrong = []
    for case in group["tests"]:
        assert case["result"] in ("valid", "invalid"), case  # no "acceptable" cases here
        expected = case["result"] == "valid"
        if _verifies(key_from, group["public"], case["jws"]) != expected:
            wrong.append(f"tcId {case['tcId']} ({case['comment']}): expected {case['result']}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "group",
    [g for g in _groups() if not _is_rs256_group(g)],
    ids=lambda g: f"{g['comment']}-{g['tests'][0]['tcId']}",
)
def test_wycheproof_other_groups_are_all_refused(key_from: KeyFrom, group: dict[str, Any]) -> None:
    """Other algorithms, and RSA keys marked for encryption: refused, valid or not."""
    jwk = group.get("public")
    accepted = [case["tcId"] for case in group["tests"] if _verifies(key_from, jwk, case["jws"])]
    assert not accepted
    # A verifier handed the group's private JWK (or secret) must refuse it just the same.
    private = group.get("private")
    assert not [
        case["tcId"] for case in group["tests"] if _verifies(key_from, private, case["jws"])
    ]


# RFC 7520 section 3.3 (Figure 3), the RSA public key of bilbo.baggins@hobbiton.example.
RFC7520_RSA_PUBLIC = {
    "kty": "RSA",
    "kid": "bilbo.baggins@hobbiton.example",
    "use": "sig",
    "n": "n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQH"
    "z_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7"
    "Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vn"
    "iUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw",
    "e": "AQAB",
}
# RFC 7520 section 4.1.3 (Figure 13), the compact serialization of the RS256 example.
RFC7520_RS256_JWS = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9"
    ".SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb2"
    "50byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2"
    "hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4"
    ".MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xu"
    "glII7PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE"
    "6x8wW1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQ"
    "SE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg"
)
# RFC 7520 section 4 (Figure 7), the payload every signature example protects.
RFC7520_PAYLOAD = (
    "It\u2019s a dangerous business, Frodo, going out your door. You step onto the road, and if "
    "you don't keep your feet, there\u2019s no knowing where you might be swept off to."
)


def test_rfc7520_rs256_example_verifies(key_from: KeyFrom) -> None:
    key = key_from(RFC7520_RSA_PUBLIC)
    assert key is not None
    jws = _verify(RFC7520_RS256_JWS, key)
    assert jws.header == {"alg": "RS256", "kid": "bilbo.baggins@hobbiton.example"}
    assert jws.payload.decode("utf-8") == RFC7520_PAYLOAD


def test_rfc7520_rs256_example_altered_is_refused(key_from: KeyFrom) -> None:
    key = key_from(RFC7520_RSA_PUBLIC)
    assert key is not None
    header, payload, signature = RFC7520_RS256_JWS.split(".")
    for forged in (
        f"{header}.{payload[:-1]}A.{signature}",
        f"{header}.{payload}.{signature[:-2]}Dh",
        f"{header}.{payload}.",
        f"{header}.{payload}.{signature}==",
    ):
        with pytest.raises((MalformedToken, InvalidSignature)):
            _verify(forged, key)
