"""authsvc.jose on its own: the strict parser refuses with MalformedToken and nothing else, and
the one parse_bearer. (Signatures: test_wycheproof.py; whole tokens: test_hostile_tokens.py.)"""

from __future__ import annotations

import base64

import pytest

from authsvc.jose.access_token import numeric_date
from authsvc.jose.bearer import parse_bearer
from authsvc.jose.jws import (
    MAX_JSON_DEPTH,
    MAX_TOKEN_LENGTH,
    MalformedToken,
    b64url_decode,
    decode_compact,
    parse_json_object,
)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


HEADER = b64(b'{"alg":"RS256","typ":"at+jwt","kid":"k"}')


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER  abc ", "abc"),
    ],
)
def test_parse_bearer_accepts(header: str | None, token: str | None) -> None:
    assert parse_bearer(header) == token


@pytest.mark.parametrize(
    "header", ["", "Bearer", "Bearer ", "Basic abc", "Bearer a b", "Bearerabc", "Token abc"]
)
def test_parse_bearer_refuses(header: str) -> None:
    with pytest.raises(MalformedToken):
        parse_bearer(header)


@pytest.mark.parametrize("segment", ["QQ==", "QR", "Q", "Q+", "Q/", "Q Q", "Q\n", "QQ\u00e9"])
def test_base64url_is_canonical_and_unpadded(segment: str) -> None:
    with pytest.raises(MalformedToken):
        b64url_decode(segment)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1, "a": 2}',
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": ' + b"1" * 5000 + b"}",  # beyond Python's integer digit limit
        b'{"a": ' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1) + b"}",
        b"\xff{}",
        b"[]",
        b"",
    ],
)
def test_json_objects_are_strict(raw: bytes) -> None:
    with pytest.raises(MalformedToken):
        parse_json_object(raw)


def test_brackets_inside_strings_are_not_nesting() -> None:
    text = '{"a": "' + "[" * 100 + '"}'
    assert parse_json_object(text.encode()) == {"a": "[" * 100}


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        f"{HEADER}.e30.",
        f".e30.{b64(b'x')}",
        f"{HEADER}.e30\u00e9.{b64(b'x')}",  # non-ASCII: refused, not a UnicodeEncodeError
        f"{HEADER}.{'A' * MAX_TOKEN_LENGTH}.{b64(b'x')}",
    ],
)
def test_decode_compact_refuses_with_malformed_token_only(token: str) -> None:
    with pytest.raises(MalformedToken):
        decode_compact(token)


def test_decode_compact_leaves_the_payload_unparsed() -> None:
    jws = decode_compact(f"{HEADER}.{b64(b'not json')}.{b64(b'sig')}")
    assert jws.header == {"alg": "RS256", "typ": "at+jwt", "kid": "k"}
    assert jws.payload == b"not json"
    with pytest.raises(MalformedToken):
        jws.claims()


@pytest.mark.parametrize("value", [True, "1", None, float("nan"), float("inf"), 10**30, [1]])
def test_numeric_date_refuses(value: object) -> None:
    assert numeric_date(value) is None


def test_numeric_date_accepts_numbers() -> None:
    assert numeric_date(1_700_000_000) == 1_700_000_000.0
    assert numeric_date(1.5) == 1.5
