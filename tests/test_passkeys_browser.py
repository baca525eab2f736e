"""A passkey in headless Chromium through WebDriver's virtual authenticator against a live
authsvc: register it while signed in, then sign in with it and no password, then answer the
hosted login page's second step with it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pyotp
import pytest

from authsvc.security.authorization_codes import s256
from tests.live import cli, live_server
from tests.test_spa_browser import CHROMEDRIVER, CHROMIUM, browser, wait_for

__all__ = ["browser"]  # the fixture, shared with the SPA test

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
    ),
]

PASSWORD = "alice's password"

# The ceremonies as a page would run them: JSON options in, base64url JSON out.
SCRIPT = """
const done = arguments[arguments.length - 1];
const [mode, token] = arguments;
const b64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
  .replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
const unb64 = (s) => Uint8Array.from(
  atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
const post = (path, body) => fetch(path, {
  method: 'POST',
  headers: Object.assign({'Content-Type': 'application/json'},
    token ? {'Authorization': 'Bearer ' + token} : {}),
  body: JSON.stringify(body || {}),
});
(async () => {
  if (mode === 'register') {
    const o = await (await post('/auth/passkeys/register/options')).json();
    o.challenge = unb64(o.challenge);
    o.user.id = unb64(o.user.id);
    o.excludeCredentials = (o.excludeCredentials || []).map((c) => ({...c, id: unb64(c.id)}));
    const c = await navigator.credentials.create({publicKey: o});
    const response = {
      clientDataJSON: b64(c.response.clientDataJSON),
      attestationObject: b64(c.response.attestationObject),
      transports: c.response.getTransports ? c.response.getTransports() : [],
    };
    const r = await post('/auth/passkeys/register/verify',
      {credential: {id: c.id, rawId: b64(c.rawId), type: c.type, response,
                    clientExtensionResults: {}}, name: 'Chromium'});
    return {status: r.status, body: await r.json()};
  }
  const o = await (await post('/auth/passkeys/login/options')).json();
  o.challenge = unb64(o.challenge);
  const c = await navigator.credentials.get({publicKey: o});
  const response = {
    clientDataJSON: b64(c.response.clientDataJSON),
    authenticatorData: b64(c.response.authenticatorData),
    signature: b64(c.response.signature),
    userHandle: c.response.userHandle ? b64(c.response.userHandle) : null,
  };
  const r = await post('/auth/passkeys/login/verify',
    {credential: {id: c.id, rawId: b64(c.rawId), type: c.type, response,
                  clientExtensionResults: {}}});
  return {status: r.status, body: await r.json()};
})().then(done, (e) => done({error: String(e)}));
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    # `localhost`: a secure context for WebAuthn, and a valid relying party id (an IP is not).
    page = tmp_path / "page"
    page.mkdir()
    (page / "index.html").write_text("<!doctype html><title>passkeys</title><p>passkeys</p>")
    with live_server(tmp_path, host="localhost", AUTHSVC_SPA_DIR=str(page)) as base:
        yield base


def test_register_and_sign_in_with_a_passkey_in_chromium(
    server: str, tmp_path: Path, browser: Any
) -> None:
    from selenium.webdriver.common.virtual_authenticator import (
        Protocol,
        Transport,
        VirtualAuthenticatorOptions,
    )

    made = cli(tmp_path, "users", "create", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    browser.get(f"{server}/spa/index.html")
    browser.add_virtual_authenticator(
        VirtualAuthenticatorOptions(
            protocol=Protocol.CTAP2,
            transport=Transport.INTERNAL,
            has_resident_key=True,
            has_user_verification=True,
            is_user_verified=True,
        )
    )
    signed_in = browser.execute_async_script(
        "fetch('/auth/login', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({username: 'alice', password: arguments[0]})})"
        ".then((r) => r.json()).then(arguments[arguments.length - 1])",
        PASSWORD,
    )
    registered = browser.execute_async_script(SCRIPT, "register", signed_in["access_token"])
    assert registered["status"] == 201, registered
    assert registered["body"]["name"] == "Chromium"
    [credential] = browser.get_credentials()
    assert credential.is_resident_credential

    for _ in range(2):  # twice: the counter moves on
        answer = browser.execute_async_script(SCRIPT, "login", None)
        assert answer["status"] == 200, answer
        me = browser.execute_async_script(
            "fetch('/auth/me', {headers: {Authorization: 'Bearer ' + arguments[0]}})"
            ".then((r) => r.json()).then(arguments[arguments.length - 1])",
            answer["body"]["access_token"],
        )
        assert me["username"] == "alice"

    hosted_second_factor(server, tmp_path, browser, signed_in["access_token"])


def hosted_second_factor(server: str, tmp_path: Path, browser: Any, access_token: str) -> None:
    """With TOTP on, the hosted login page's code form offers the passkey; its script answers
    the second step and the browser lands on the client's redirect URI with a code."""
    from selenium.webdriver.common.by import By

    bearer = {"Authorization": f"Bearer {access_token}"}
    callback = f"{server}/spa/index.html"
    created = cli(tmp_path, "clients", "create", "Example app", "--redirect-uri", callback)
    assert created.returncode == 0, created.stderr
    fields = dict(line.split(": ", 1) for line in created.stdout.splitlines() if ": " in line)
    verifier = secrets.token_urlsafe(48)
    with httpx.Client(base_url=server) as http:
        secret = http.post("/auth/mfa/totp/enroll", headers=bearer).json()["secret"]
        code = pyotp.TOTP(secret).now()
        confirmed = http.post("/auth/mfa/totp/confirm", json={"code": code}, headers=bearer)
        assert confirmed.status_code == 200, confirmed.text

        query = urlencode(
            {
                "response_type": "code",
                "client_id": fields["client_id"],
                "redirect_uri": callback,
                "scope": "openid",
                "state": "st",
                "code_challenge": s256(verifier),
                "code_challenge_method": "S256",
            }
        )
        browser.get(f"{server}/oauth/authorize?{query}")
        browser.find_element(By.ID, "username").send_keys("alice")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "button[value=login]").click()
        # The button is hidden until its script runs.
        wait_for(browser, "return document.getElementById('passkey')?.hidden === false")
        browser.find_element(By.ID, "passkey").click()
        wait_for(browser, "return location.pathname === '/spa/index.html'")
        answer = parse_qs(urlsplit(browser.current_url).query)
        assert answer["state"] == ["st"] and answer["iss"] == [server], browser.current_url
        tokens = http.post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": answer["code"][0],
                "redirect_uri": callback,
                "code_verifier": verifier,
                "client_id": fields["client_id"],
            },
        )
    assert tokens.status_code == 200, tokens.text
    claims = jwt.decode(tokens.json()["access_token"], options={"verify_signature": False})
    assert claims["amr"] == ["pwd", "hwk", "mfa"]
