"""Forged and malformed access tokens: every one gets 401 invalid_token, never a 500, never a
network call, on every endpoint that takes an access token (GET /auth/me, POST /auth/logout),
and the same refusal from `authsvc.verifier` (what resource servers run): each test runs
against both callers.

Most forgeries below are signed with the server's *real* signing key, so the only check that
can stop them is the one the case is about (a leaked key is not the threat model, but this is
how each rule is shown to hold on its own). A control case proves the re-signing itself is
accepted when nothing is wrong.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from authsvc.errors import InvalidToken
from authsvc.jose.jws import MAX_TOKEN_LENGTH
from authsvc.security.keys import LoadedKey, public_jwk
from authsvc.store.repositories import DenylistRepository
from authsvc.verifier import AuthenticationFailed, TokenError, Verifier
from tests.conftest import Harness


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """Request handling, not storage, is under test here: SQLite alone."""
    return sqlite_url


pytestmark = pytest.mark.anyio


@functools.cache
def _attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rs256(signing_input: str, key: rsa.RSAPrivateKey) -> str:
    return b64(key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))


@dataclass
class Forge:
    """Makes tokens from a real login: its header, its claims and the server's signing key."""

    token: str
    header: dict[str, Any]
    claims: dict[str, Any]
    key: LoadedKey
    now: int
    leeway: int
    listener_url: str
    attacker: rsa.RSAPrivateKey = field(default_factory=lambda: _attacker_key())

    def raw(self, header: bytes, payload: bytes, key: rsa.RSAPrivateKey | None = None) -> str:
        signing_input = f"{b64(header)}.{b64(payload)}"
        return f"{signing_input}.{rs256(signing_input, key or self.key.private)}"

    def sign(
        self,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        h = json.dumps(self.header if header is None else header).encode()
        c = json.dumps(self.claims if claims is None else claims).encode()
        return self.raw(h, c, key)

    def with_header(self, **changes: Any) -> str:
        return self.sign(header=_changed(self.header, changes))

    def with_claims(self, **changes: Any) -> str:
        return self.sign(claims=_changed(self.claims, changes))

    def hs256(self, secret: bytes, header: dict[str, Any] | None = None) -> str:
        h = {"alg": "HS256", "typ": "at+jwt", "kid": self.key.kid} if header is None else header
        signing_input = f"{b64(json.dumps(h).encode())}.{b64(json.dumps(self.claims).encode())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(mac)}"

    @property
    def parts(self) -> list[str]:
        return self.token.split(".")


_DROP = object()


def _changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for name, value in changes.items():
        if value is _DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


Case = Callable[[Forge], str]


def _set_header(**changes: Any) -> Case:
    return lambda f: f.with_header(**changes)


def _set_claim(claim: str, value: Any) -> Case:
    return lambda f: f.with_claims(**{claim: value})


def _map_claim(claim: str, change: Callable[[Any], Any]) -> Case:
    return lambda f: f.with_claims(**{claim: change(f.claims[claim])})


def _none_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for spelling in ["none", "None", "NONE", "nOnE", "none ", ""]:

        def empty_sig(f: Forge, s: str = spelling) -> str:
            h = b64(json.dumps({**f.header, "alg": s}).encode())
            return f"{h}.{f.parts[1]}."

        def kept_sig(f: Forge, s: str = spelling) -> str:
            h = b64(json.dumps({**f.header, "alg": s}).encode())
            return f"{h}.{f.parts[1]}.{f.parts[2]}"

        cases[f"alg={spelling!r}, empty signature"] = empty_sig
        cases[f"alg={spelling!r}, original signature"] = kept_sig
    cases["alg missing"] = lambda f: f.with_header(alg=_DROP)
    cases["alg null"] = lambda f: f.with_header(alg=None)
    cases["alg as list"] = lambda f: f.with_header(alg=["RS256"])
    cases["alg lower case rs256"] = lambda f: f.with_header(alg="rs256")
    cases["alg RS512"] = lambda f: f.with_header(alg="RS512")
    cases["alg PS256"] = lambda f: f.with_header(alg="PS256")
    return cases


def _hs256_cases() -> dict[str, Case]:
    def pem(f: Forge) -> bytes:
        return f.key.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def pkcs1(f: Forge) -> bytes:
        return f.key.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        )

    def der(f: Forge) -> bytes:
        return f.key.public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk_text(f: Forge) -> bytes:
        return json.dumps(public_jwk(f.key.public)).encode()

    return {
        "HS256 keyed with the public PEM": lambda f: f.hs256(pem(f)),
        "HS256 keyed with the PKCS1 PEM": lambda f: f.hs256(pkcs1(f)),
        "HS256 keyed with the public PEM, no newline": lambda f: f.hs256(pem(f).rstrip()),
        "HS256 keyed with the DER": lambda f: f.hs256(der(f)),
        "HS256 keyed with the JWK text": lambda f: f.hs256(jwk_text(f)),
        "HS256 keyed with the JWKS n": lambda f: f.hs256(public_jwk(f.key.public)["n"].encode()),
        "HS256 without typ": lambda f: f.hs256(pem(f), {"alg": "HS256", "kid": f.key.kid}),
    }


def _segment_cases() -> dict[str, Case]:
    return {
        "signature stripped": lambda f: f"{f.parts[0]}.{f.parts[1]}.",
        "two segments": lambda f: f"{f.parts[0]}.{f.parts[1]}",
        "one segment": lambda f: f.parts[1],
        "empty header": lambda f: f".{f.parts[1]}.{f.parts[2]}",
        "signature truncated": lambda f: f"{f.parts[0]}.{f.parts[1]}.{f.parts[2][:-4]}",
        "signature extended": lambda f: f"{f.token}AAAA",
        "signature altered": lambda f: f"{f.parts[0]}.{f.parts[1]}.{_flip(f.parts[2], 10)}",
        "payload altered": lambda f: f"{f.parts[0]}.{_flip(f.parts[1], 12)}.{f.parts[2]}",
        "header altered": lambda f: f"{_flip(f.parts[0], 5)}.{f.parts[1]}.{f.parts[2]}",
        "extra segment": lambda f: f"{f.token}.{f.parts[2]}",
        "five segments (JWE shape)": lambda f: f"{f.token}.{f.parts[1]}.{f.parts[2]}",
        "signature of another token": lambda f: f"{f.parts[0]}.{b64(b'{}')}.{f.parts[2]}",
        "signed by another key, same kid": lambda f: f.sign(key=f.attacker),
        "dots only": lambda f: "..",
        "garbage": lambda f: "not-a-token",
        "JSON serialization": lambda f: json.dumps(
            {"protected": f.parts[0], "payload": f.parts[1], "signature": f.parts[2]}
        ),
    }


def _flip(segment: str, index: int) -> str:
    ch = segment[index]
    return segment[:index] + ("A" if ch != "A" else "B") + segment[index + 1 :]


def _kid_cases() -> dict[str, Case]:
    return {
        "kid unknown": lambda f: f.with_header(kid="no-such-key"),
        "kid missing": lambda f: f.with_header(kid=_DROP),
        "kid empty": lambda f: f.with_header(kid=""),
        "kid null": lambda f: f.with_header(kid=None),
        "kid number": lambda f: f.with_header(kid=1),
        "kid huge": lambda f: f.with_header(kid="k" * 5000),
        "kid path traversal": lambda f: f.with_header(kid="../../../../etc/passwd"),
        "kid /dev/null": lambda f: f.with_header(kid="/dev/null"),
        "kid SQL": lambda f: f.with_header(kid="' OR '1'='1' --"),
        "kid URL": lambda f: f.with_header(kid=f.listener_url + "/key"),
        "kid of the attacker key": lambda f: f.sign(
            header={**f.header, "kid": public_jwk(f.attacker.public_key())["kid"]},
            key=f.attacker,
        ),
    }


def _header_member_cases() -> dict[str, Case]:
    def embedded_jwk(f: Forge) -> str:
        jwk = public_jwk(f.attacker.public_key())
        return f.sign(header={**f.header, "jwk": jwk}, key=f.attacker)

    def embedded_jwk_real_key(f: Forge) -> str:
        return f.with_header(jwk=public_jwk(f.key.public))

    def x5c(f: Forge) -> str:
        der = f.key.public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f.with_header(x5c=[base64.b64encode(der).decode()])

    return {
        "embedded jwk (attacker key)": embedded_jwk,
        "embedded jwk (our own key)": embedded_jwk_real_key,
        "jku": lambda f: f.sign(
            header={**f.header, "jku": f.listener_url + "/jwks.json"}, key=f.attacker
        ),
        "jku signed by us": lambda f: f.with_header(jku=f.listener_url + "/jwks.json"),
        "x5u": lambda f: f.sign(header={**f.header, "x5u": f.listener_url + "/x.pem"}),
        "x5c": x5c,
        "x5t": lambda f: f.with_header(x5t="abc"),
        "crit exp": lambda f: f.with_header(crit=["exp"]),
        "crit b64 false (RFC 7797)": lambda f: f.with_header(crit=["b64"], b64=False),
        "unknown header member": lambda f: f.with_header(foo="bar"),
        "cty JWT (nested)": lambda f: f.with_header(cty="JWT"),
        "zip": lambda f: f.with_header(zip="DEF"),
    }


def _typ_cases() -> dict[str, Case]:
    return {
        f"typ {value!r}": _set_header(typ=value)
        for value in [
            _DROP,
            "JWT",
            "jwt",
            "application/jwt",
            "",
            "rt+jwt",
            "dpop+jwt",
            "at+jwt; q=1",
            "at+jwt ",
            1,
            None,
            ["at+jwt"],
        ]
    }


def _time_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for claim in ("exp", "nbf", "iat"):
        cases[f"{claim} missing"] = _set_claim(claim, _DROP)
        cases[f"{claim} string"] = _map_claim(claim, str)
        cases[f"{claim} null"] = _set_claim(claim, None)
        cases[f"{claim} true"] = _set_claim(claim, True)
        cases[f"{claim} list"] = _map_claim(claim, lambda value: [value])
        cases[f"{claim} huge"] = _set_claim(claim, 10**30)
    for literal in ("NaN", "Infinity", "-Infinity", "1e400"):
        cases[f"exp {literal}"] = functools.partial(_raw_claim, claim="exp", literal=literal)
    cases["nbf NaN"] = lambda f: _raw_claim(f, "nbf", "NaN")
    cases["iat -Infinity in exp slot"] = lambda f: _raw_claim(f, "exp", "-Infinity")
    cases["exp past beyond leeway"] = lambda f: f.with_claims(exp=f.now - f.leeway - 1)
    cases["exp past, float"] = lambda f: f.with_claims(exp=f.now - f.leeway - 0.5)
    cases["nbf future beyond leeway"] = lambda f: f.with_claims(nbf=f.now + f.leeway + 2)
    cases["iat future beyond leeway"] = lambda f: f.with_claims(iat=f.now + f.leeway + 2)
    cases["iat after exp"] = lambda f: f.with_claims(iat=f.now + f.leeway - 1, exp=f.now + 1)
    return cases


def _raw_claim(f: Forge, claim: str, literal: str) -> str:
    marker = "__RAW__"
    text = json.dumps({**f.claims, claim: marker}).replace(f'"{marker}"', literal)
    return f.raw(json.dumps(f.header).encode(), text.encode())


def _audience_issuer_cases() -> dict[str, Case]:
    return {
        "aud missing": lambda f: f.with_claims(aud=_DROP),
        "aud other": lambda f: f.with_claims(aud="other-api"),
        "aud in an array": lambda f: f.with_claims(aud=[f.claims["aud"]]),
        "aud in an array with another": lambda f: f.with_claims(aud=[f.claims["aud"], "x"]),
        "aud upper case": lambda f: f.with_claims(aud=f.claims["aud"].upper()),
        "aud prefix": lambda f: f.with_claims(aud=f.claims["aud"][:-1]),
        "aud suffix": lambda f: f.with_claims(aud=f.claims["aud"] + "x"),
        "aud null": lambda f: f.with_claims(aud=None),
        "iss missing": lambda f: f.with_claims(iss=_DROP),
        "iss prefix": lambda f: f.with_claims(iss=f.claims["iss"][:-2]),
        "iss suffix": lambda f: f.with_claims(iss=f.claims["iss"] + ".evil.example"),
        "iss trailing slash": lambda f: f.with_claims(iss=f.claims["iss"] + "/"),
        "iss upper case": lambda f: f.with_claims(iss=f.claims["iss"].upper()),
        "iss null": lambda f: f.with_claims(iss=None),
        "iss as list": lambda f: f.with_claims(iss=[f.claims["iss"]]),
    }


def _subject_cases() -> dict[str, Case]:
    return {
        "sub missing": lambda f: f.with_claims(sub=_DROP),
        "sub number": lambda f: f.with_claims(sub=1),
        "sub of nobody": lambda f: f.with_claims(sub=str(uuid.uuid4())),
        "sub not a uuid": lambda f: f.with_claims(sub="admin"),
        "sid missing": lambda f: f.with_claims(sid=_DROP),
        "sid of no session": lambda f: f.with_claims(sid=str(uuid.uuid4())),
        "sid not a uuid": lambda f: f.with_claims(sid="'; DROP TABLE sessions; --"),
        "jti missing": lambda f: f.with_claims(jti=_DROP),
        "jti number": lambda f: f.with_claims(jti=7),
        "jti huge": lambda f: f.with_claims(jti="j" * 500),
        "roles a string": lambda f: f.with_claims(roles="admin"),
        "roles with a number": lambda f: f.with_claims(roles=["admin", 1]),
        "scope a list": lambda f: f.with_claims(scope=["api"]),
    }


def _json_cases() -> dict[str, Case]:
    def dup_claim(f: Forge) -> str:
        body = json.dumps(f.claims)[:-1] + f', "sub": "{uuid.uuid4()}"}}'
        return f.raw(json.dumps(f.header).encode(), body.encode())

    def dup_alg(f: Forge) -> str:
        header = '{"alg": "none", ' + json.dumps(f.header)[1:]
        return f.raw(header.encode(), json.dumps(f.claims).encode())

    def dup_typ(f: Forge) -> str:
        header = json.dumps(f.header)[:-1] + ', "typ": "at+jwt"}'
        return f.raw(header.encode(), json.dumps(f.claims).encode())

    def nested(f: Forge, depth: int) -> str:
        body = json.dumps(f.claims)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
        return f.raw(json.dumps(f.header).encode(), body.encode())

    def latin1(f: Forge) -> str:
        body = json.dumps(f.claims)[:-1] + ', "x": "caf\xe9"}'
        return f.raw(json.dumps(f.header).encode(), body.encode("latin-1"))

    def header_latin1(f: Forge) -> str:
        header = json.dumps(f.header)[:-1] + ', "x": "\xff"}'
        return f.raw(header.encode("latin-1"), json.dumps(f.claims).encode())

    def surrogates(f: Forge) -> str:
        return f.raw(json.dumps(f.header).encode(), b'{"sub": "\xed\xa0\x80"}')

    def bom(f: Forge) -> str:
        return f.raw(json.dumps(f.header).encode(), b"\xef\xbb\xbf" + json.dumps(f.claims).encode())

    return {
        "duplicate claim (sub)": dup_claim,
        "duplicate header member (alg)": dup_alg,
        "duplicate header member (typ)": dup_typ,
        "deeply nested claim": lambda f: nested(f, 200),
        "very deeply nested claim": lambda f: nested(f, 3000),
        "non-UTF-8 payload": latin1,
        "non-UTF-8 header": header_latin1,
        "UTF-8 surrogate in payload": surrogates,
        "payload with a BOM": bom,
        "payload a list": lambda f: f.raw(json.dumps(f.header).encode(), b"[]"),
        "payload a string": lambda f: f.raw(json.dumps(f.header).encode(), b'"x"'),
        "payload empty": lambda f: f.raw(json.dumps(f.header).encode(), b""),
        "payload not JSON": lambda f: f.raw(json.dumps(f.header).encode(), b"{sub: 1}"),
        "header a list": lambda f: f.raw(b'["RS256"]', json.dumps(f.claims).encode()),
    }


def _size_and_encoding_cases() -> dict[str, Case]:
    def oversized(f: Forge) -> str:
        return f.with_claims(x="a" * MAX_TOKEN_LENGTH)

    def non_canonical_signature(f: Forge) -> str:
        # 256 signature bytes take 342 characters whose last one carries 4 unused bits.
        sig = f.parts[2]
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(sig[-1])
        return f"{f.parts[0]}.{f.parts[1]}.{sig[:-1]}{alphabet[last | 1]}"

    def standard_alphabet(f: Forge) -> str:
        return ".".join(p.replace("-", "+").replace("_", "/") for p in f.parts)

    def needs_standard(f: Forge) -> str:
        # Make sure the case really has a '-' or '_' somewhere; otherwise flip one byte.
        token = standard_alphabet(f)
        return token if token != f.token else f"{f.parts[0]}.{f.parts[1]}.+{f.parts[2][1:]}"

    return {
        "oversized (signed)": oversized,
        "oversized garbage": lambda f: "a" * (MAX_TOKEN_LENGTH + 4000),
        "padding added to every segment": lambda f: ".".join(
            p + "=" * (-len(p) % 4) for p in f.parts
        ),
        "padding added to the signature": lambda f: f.token + "==",
        "non-canonical trailing bits in the signature": non_canonical_signature,
        "standard base64 alphabet": needs_standard,
        "whitespace inside a segment": lambda f: (
            f"{f.parts[0]}.{f.parts[1][:5]} {f.parts[1][5:]}.{f.parts[2]}"
        ),
        "newline inside a segment": lambda f: (
            f"{f.parts[0]}.{f.parts[1][:5]}\n{f.parts[1][5:]}.{f.parts[2]}"
        ),
        "non-ASCII in a segment": lambda f: f"{f.parts[0]}.{f.parts[1]}é.{f.parts[2]}",
        "refresh token as bearer": lambda f: "rt_" + "A" * 43,
    }


def _padded(token: str) -> str:
    return ".".join(p + "=" * (-len(p) % 4) for p in token.split("."))


def _inserted(f: Forge, text: str) -> str:
    return f"{f.parts[0]}.{f.parts[1][:5]}{text}{f.parts[1][5:]}.{f.parts[2]}"


GROUPS: dict[str, Callable[[], dict[str, Case]]] = {
    "alg_none_and_other_algorithms": _none_cases,
    "hs256_keyed_with_the_public_key": _hs256_cases,
    "stripped_truncated_altered_extra_segments": _segment_cases,
    "hostile_kid": _kid_cases,
    "embedded_keys_urls_and_crit": _header_member_cases,
    "wrong_typ": _typ_cases,
    "bad_time_claims": _time_cases,
    "wrong_audience_or_issuer": _audience_issuer_cases,
    "bad_subject_session_or_id_claims": _subject_cases,
    "hostile_json": _json_cases,
    "oversized_and_non_canonical_base64": _size_and_encoding_cases,
}


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A local TCP port that the token URLs point at: any connection to it is a failure."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def _connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


# Checks that need the server's database (does this user or session exist?): a resource
# server learns of ended sessions only through the revocation feed, which these never entered.
SERVER_ONLY = frozenset({"sub of nobody", "sub not a uuid", "sid of no session", "sid not a uuid"})


class Caller(Protocol):
    name: str

    async def problems(self, token: str) -> list[str]:
        """Present the token; what went wrong (empty when it was refused as it should be)."""
        ...

    async def accepts(self, token: str) -> bool: ...

    async def sync(self) -> None:
        """Let the caller learn of logouts (the verifier polls the revocation feed)."""
        ...


@dataclass
class ServerCaller:
    harness: Harness
    name: str = "server"

    async def problems(self, token: str) -> list[str]:
        return await _refused(self.harness, token)

    async def accepts(self, token: str) -> bool:
        return (await self.harness.me(token)).status_code == 200

    async def sync(self) -> None:
        return None


@dataclass
class VerifierCaller:
    verifier: Verifier
    name: str = "verifier"

    async def problems(self, token: str) -> list[str]:
        problems = []
        try:
            await self.verifier.verify(token)
            problems.append("verify() accepted it")
        except TokenError:
            pass
        try:
            await self.verifier.authenticate(f"Bearer {token}")
            problems.append("authenticate() accepted it")
        except AuthenticationFailed as exc:
            if exc.status != 401 or exc.error != "invalid_token":
                problems.append(f"authenticate() -> {exc.status} {exc.error}")
        return problems

    async def accepts(self, token: str) -> bool:
        try:
            await self.verifier.verify(token)
        except TokenError:
            return False
        return True

    async def sync(self) -> None:
        assert await self.verifier.sync()


@pytest.fixture(params=["server", "verifier"])
async def caller(request: pytest.FixtureRequest, harness: Harness) -> AsyncIterator[Caller]:
    if request.param == "server":
        yield ServerCaller(harness)
        return
    settings = harness.state.settings
    verifier = Verifier(
        issuer=settings.issuer,
        audience=settings.audience,
        leeway=settings.token_leeway_seconds,
        http_client=harness.client,
        clock=lambda: harness.clock.now().timestamp(),
        poll_interval=3600.0,  # polled by the tests (sync), not in the background
    )
    async with verifier:
        yield VerifierCaller(verifier)


async def forge_for(harness: Harness, listener: socket.socket | None = None) -> Forge:
    await harness.create_user()
    tokens = await harness.login()
    token = tokens["access_token"]
    header_b64, payload_b64, _ = token.split(".")
    now = harness.clock.now()
    async with harness.state.database.read() as db:
        ring = await harness.state.keys.ring_at(db, now)
    key = ring.signing_key(now)
    assert key is not None
    port = listener.getsockname()[1] if listener is not None else 9
    return Forge(
        token=token,
        header=json.loads(base64.urlsafe_b64decode(header_b64 + "==")),
        claims=json.loads(base64.urlsafe_b64decode(payload_b64 + "==")),
        key=key,
        now=int(now.timestamp()),
        leeway=harness.state.settings.token_leeway_seconds,
        listener_url=f"http://127.0.0.1:{port}",
    )


async def _refused(harness: Harness, token: str) -> list[str]:
    """Present the token on every access-token endpoint; return what went wrong.

    Straight to the service too, since some tokens (newlines, non-ASCII) cannot travel in an
    HTTP header but could reach a verifier some other way.
    """
    problems = []
    async with harness.state.database.read() as db:
        try:
            await harness.state.access.authenticate(db, token, harness.clock.now())
            problems.append("authenticate() accepted it")
        except InvalidToken:
            pass
    headers = {"Authorization": f"Bearer {token}"}
    for method, path in (("GET", "/auth/me"), ("POST", "/auth/logout")):
        try:
            response = await harness.client.request(method, path, headers=headers)
        except Exception as exc:  # e.g. a header value httpx itself refuses to send
            if isinstance(exc, ValueError | UnicodeEncodeError):
                continue
            raise
        if response.status_code != 401:
            problems.append(f"{method} {path} -> {response.status_code} {response.text[:80]}")
        elif response.json().get("error") != "invalid_token":
            problems.append(f"{method} {path} -> {response.json()}")
        elif "bearer" not in response.headers.get("www-authenticate", "").lower():
            problems.append(f"{method} {path}: no WWW-Authenticate")
    return problems


@pytest.mark.parametrize("group", list(GROUPS))
async def test_forged_tokens_are_refused_with_401(
    harness: Harness, caller: Caller, listener: socket.socket, group: str
) -> None:
    forge = await forge_for(harness, listener)
    # Control: the forge's own re-signing of the unchanged token is accepted, so every 401
    # below comes from the one rule its case breaks.
    assert await caller.accepts(forge.sign())
    failures = []
    for name, make in GROUPS[group]().items():
        if caller.name != "server" and name in SERVER_ONLY:
            continue
        token = make(forge)
        assert token != forge.token, name
        for problem in await caller.problems(token):
            failures.append(f"{name}: {problem}")
    assert not failures, "\n".join(failures)
    # Nothing the tokens named was fetched, and the real session is untouched.
    assert _connections(listener) == 0
    assert await caller.accepts(forge.token)


async def test_time_claims_get_the_configured_leeway(harness: Harness, caller: Caller) -> None:
    forge = await forge_for(harness)
    leeway = forge.leeway
    assert leeway == harness.state.settings.token_leeway_seconds > 0
    now = forge.now
    past = {"iat": now - 100, "nbf": now - 100}
    assert await caller.accepts(forge.with_claims(exp=now - leeway + 1, **past))
    assert await caller.accepts(forge.with_claims(nbf=now + leeway - 1))
    assert await caller.accepts(forge.with_claims(iat=now + leeway - 1))
    assert not await caller.accepts(forge.with_claims(exp=now - leeway, **past))
    assert not await caller.accepts(forge.with_claims(nbf=now + leeway + 1))


@pytest.mark.parametrize("settings_overrides", [{"token_leeway_seconds": 0}])
async def test_zero_leeway_is_exact(harness: Harness, caller: Caller) -> None:
    forge = await forge_for(harness)
    assert await caller.accepts(forge.with_claims(nbf=forge.now))
    assert not await caller.accepts(forge.with_claims(nbf=forge.now + 1))
    assert not await caller.accepts(forge.with_claims(exp=forge.now, iat=0))
    harness.clock.advance(299)
    assert await caller.accepts(forge.token)
    harness.clock.advance(1)
    assert not await caller.accepts(forge.token)


async def test_logged_out_token_with_padding_added_stays_refused(
    harness: Harness, caller: Caller
) -> None:
    forge = await forge_for(harness)
    assert await caller.accepts(forge.token)
    response = await harness.client.post(
        "/auth/logout", headers={"Authorization": f"Bearer {forge.token}"}
    )
    assert response.status_code == 204
    await caller.sync()
    for variant in (
        forge.token,
        _padded(forge.token),
        forge.token + "=",
        forge.sign(),  # same claims, a fresh serialisation
    ):
        assert await caller.problems(variant) == []


async def test_denylist_is_keyed_by_jti_not_by_token_string(
    harness: Harness, caller: Caller
) -> None:
    """A denylisted jti is refused in any spelling, while its session stays usable."""
    forge = await forge_for(harness)
    now = harness.clock.now()
    async with harness.state.database.transaction() as db:
        await DenylistRepository(db).add(
            forge.claims["jti"],
            uuid.UUID(forge.claims["sid"]),
            datetime.fromtimestamp(forge.claims["exp"], tz=now.tzinfo),
            now,
        )
    await caller.sync()
    respelled = forge.with_claims(iat=forge.claims["iat"] - 1, x="different bytes")
    assert respelled != forge.token
    assert await caller.problems(forge.token) == []
    assert await caller.problems(respelled) == []
    # Another jti on the same (live) session is fine: it was the jti that was refused.
    assert await caller.accepts(forge.with_claims(jti="another-jti"))


async def test_refresh_token_is_not_a_bearer_token(harness: Harness, caller: Caller) -> None:
    await harness.create_user()
    tokens = await harness.login()
    assert await caller.problems(tokens["refresh_token"]) == []


async def test_access_token_is_not_a_refresh_token(harness: Harness) -> None:
    await harness.create_user()
    tokens = await harness.login()
    response = await harness.refresh(tokens["access_token"])
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_refresh_token"
    response = await harness.client.post(
        "/auth/logout", json={"refresh_token": tokens["access_token"]}
    )
    assert response.status_code == 401
    # Neither mistake spent or revoked anything.
    assert (await harness.refresh(tokens["refresh_token"])).status_code == 200
