"""`authsvc token inspect`, run as a real process: every check's verdict, and the token never
leaves the machine (the JWKS and the feed are fetched with plain GETs)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest

from authsvc.security.keys import generate_private_key, public_jwk
from tests.conftest import Harness
from tests.live import cli, free_port

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


class FakeNetwork:
    """An HTTP endpoint standing in for authsvc's public GETs, recording every request."""

    def __init__(self) -> None:
        self.documents: dict[str, Any] = {}
        self.seen: list[str] = []
        network = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                network.seen.append(
                    self.requestline + str(self.headers) + self.rfile.read(length).decode()
                )
                body = network.documents.get(self.path.split("?")[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(body).encode())

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def network() -> Iterator[FakeNetwork]:
    net = FakeNetwork()
    try:
        yield net
    finally:
        net.close()


ENV = {"AUTHSVC_ISSUER": "https://auth.test", "AUTHSVC_AUDIENCE": "api.test"}


async def _publish(harness: Harness, network: FakeNetwork) -> None:
    jwks = await harness.client.get("/.well-known/jwks.json")
    feed = await harness.client.get("/auth/revocations")
    network.documents = {"/.well-known/jwks.json": jwks.json(), "/auth/revocations": feed.json()}


async def test_a_good_token_passes_every_check_and_is_never_sent(
    harness: Harness, network: FakeNetwork, tmp_path: Path
) -> None:
    await harness.create_user()
    tokens = await harness.login()
    await _publish(harness, network)
    result = cli(tmp_path, "token", "inspect", tokens["access_token"], "--url", network.url, **ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for check in ("signature", "alg", "typ", "iss", "aud", "exp", "nbf", "iat", "revocation"):
        assert any(line.split()[:2] == ["ok", check] for line in out.splitlines()), check
    assert "Verdict: VALID" in out
    exp = jwt.decode(tokens["access_token"], options={"verify_signature": False})["exp"]
    assert f"exp: {exp}  (20" in out and "Z, in " in out  # the time as an ISO date too
    assert len(network.seen) == 2  # the JWKS and one page of the feed
    signature = tokens["access_token"].split(".")[2]
    assert all(signature not in request for request in network.seen)


async def test_a_logged_out_token_fails_the_revocation_check(
    harness: Harness, network: FakeNetwork, tmp_path: Path
) -> None:
    await harness.create_user()
    tokens = await harness.login()
    await harness.client.post(
        "/auth/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    await _publish(harness, network)
    result = cli(tmp_path, "token", "inspect", "-", "--url", network.url,
                 stdin=tokens["access_token"] + "\n", **ENV)  # fmt: skip
    assert result.returncode == 1
    assert "FAIL  revocation  the jti is denylisted" in result.stdout
    assert "Verdict: INVALID" in result.stdout


async def test_each_failing_check_is_named(
    harness: Harness, network: FakeNetwork, tmp_path: Path
) -> None:
    await harness.create_user()
    tokens = await harness.login()
    await _publish(harness, network)
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(network.documents["/.well-known/jwks.json"]))
    # Wrong audience configured, and authsvc unreachable: revocation is skipped, not failed.
    dead = f"http://127.0.0.1:{free_port()}"
    result = cli(tmp_path, "token", "inspect", tokens["access_token"], "--jwks", str(jwks_file),
                 "--url", dead, **{**ENV, "AUTHSVC_AUDIENCE": "other"})  # fmt: skip
    assert result.returncode == 1
    assert "FAIL  aud" in result.stdout
    assert "ok    signature" in result.stdout
    assert "skip  revocation  cannot read the revocation feed" in result.stdout
    # Signed by a key the JWKS does not hold, expired, and with the wrong typ.
    other = generate_private_key(2048)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    claims["exp"] = claims["iat"] - 3600
    forged = jwt.encode(
        claims, other, algorithm="RS256", headers={"kid": public_jwk(other.public_key())["kid"]}
    )
    result = cli(tmp_path, "token", "inspect", forged, "--jwks", str(jwks_file),
                 "--no-revocation", **ENV)  # fmt: skip
    assert result.returncode == 1
    lines = result.stdout
    assert "FAIL  signature   kid" in lines and "is not in the JWKS" in lines
    assert "FAIL  exp         expired" in lines
    assert "FAIL  typ" in lines
    # Three parts that are not base64url JSON: a JWT in shape only.
    broken = cli(tmp_path, "token", "inspect", "aaa.bbb.ccc", "--no-revocation", **ENV)
    assert broken.returncode == 1
    assert "FAIL  format" in broken.stdout


async def test_expected_issuer_and_audience_from_options(
    harness: Harness, network: FakeNetwork, tmp_path: Path
) -> None:
    await harness.create_user()
    tokens = await harness.login()
    await _publish(harness, network)
    # Configured for another authsvc: --issuer and --audience say what this token should carry.
    other = {"AUTHSVC_ISSUER": "https://other.test", "AUTHSVC_AUDIENCE": "other"}
    args = ["token", "inspect", tokens["access_token"], "--url", network.url]
    assert cli(tmp_path, *args, **other).returncode == 1
    result = cli(tmp_path, *args, "--issuer", "https://auth.test", "--audience", "api.test",
                 **other)  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert "ok    iss         https://auth.test" in result.stdout
    assert "ok    aud         api.test" in result.stdout
    wrong = cli(tmp_path, *args, "--audience", "billing", **ENV)
    assert wrong.returncode == 1 and "FAIL  aud" in wrong.stdout


async def test_no_revocation_is_reported_as_such(
    harness: Harness, network: FakeNetwork, tmp_path: Path
) -> None:
    await harness.create_user()
    tokens = await harness.login()
    await _publish(harness, network)
    result = cli(tmp_path, "token", "inspect", tokens["access_token"], "--url", network.url,
                 "--no-revocation", **ENV)  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert "skip  revocation  not checked (--no-revocation)" in result.stdout
    assert "Verdict: VALID (revocation not checked)" in result.stdout
    assert len(network.seen) == 1  # the JWKS only
