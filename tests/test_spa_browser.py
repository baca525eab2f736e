"""The example SPA (examples/spa) in headless Chromium against a live authsvc: sign in with the
authorization code flow and PKCE through the hosted login page, tokens bound to a
non-extractable DPoP key shared by the tabs, three tabs refreshing at once without being logged
out, and RP-initiated logout ending the session and the hosted page's sign-in."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import cli, free_port, live_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SPA_DIR = Path(__file__).resolve().parent.parent / "examples" / "spa"
ACCESS_TTL = 10  # the smallest the settings allow; with no leeway the tokens expire in 10 s

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
    ),
]


@pytest.fixture
def spa_dir(tmp_path: Path) -> Path:
    """A copy of the SPA, where the test writes its config.json."""
    target = tmp_path / "spa"
    shutil.copytree(SPA_DIR, target, ignore=shutil.ignore_patterns("config.json"))
    return target


@pytest.fixture
def server(tmp_path: Path, spa_dir: Path) -> Iterator[str]:
    # `localhost`, not 127.0.0.1: Chromium treats http://localhost as a secure context, so it
    # offers WebCrypto, Web Locks and Secure cookies there.
    with live_server(
        tmp_path,
        host="localhost",
        AUTHSVC_SPA_DIR=str(spa_dir),
        AUTHSVC_ACCESS_TOKEN_TTL=str(ACCESS_TTL),
        AUTHSVC_TOKEN_LEEWAY_SECONDS="0",
    ) as base:
        yield base


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="authsvc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        # Background tabs must run their timers on time for the simultaneous refresh.
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: Any, script: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}\n{log_of(driver)}")


def log_of(driver: Any) -> str:
    return str(driver.execute_script("return document.getElementById('log')?.textContent"))


def status_of(driver: Any) -> str:
    return str(driver.execute_script("return document.getElementById('status').textContent"))


def app_ready(driver: Any) -> None:
    wait_for(driver, "return window.authsvcApp?.state.ready")


def signed_in_as(driver: Any, username: str) -> None:
    app_ready(driver)
    wait_for(driver, f"return document.getElementById('status').textContent.includes('{username}')")


def signed_out(driver: Any) -> None:
    app_ready(driver)
    wait_for(driver, "return document.getElementById('status').textContent === 'signed out'")


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return decoded


def public_key_of(driver: Any) -> str:
    """The tab's DPoP public key (JWK x coordinate); asserts the private half is not extractable."""
    key = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.authsvcApp.dpopKey().then(async (key) => done({"
        "  extractable: key.privateKey.extractable,"
        "  x: (await crypto.subtle.exportKey('jwk', key.publicKey)).x,"
        "  export: await crypto.subtle.exportKey('jwk', key.privateKey).then("
        "    () => 'exported', (error) => error.name),"
        "}));"
    )
    assert key["extractable"] is False and key["export"] == "InvalidAccessError", key
    return str(key["x"])


def sign_in_on_hosted_page(driver: Any, username: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "login").click()
    wait_for(driver, "return location.pathname === '/oauth/authorize'")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[value=login]").click()
    signed_in_as(driver, username)


def test_spa_code_flow_dpop_multi_tab_refresh_and_logout(
    server: str, tmp_path: Path, spa_dir: Path, browser: Any
) -> None:
    made = cli(tmp_path, "users", "create", "alice", "--password-stdin", stdin="alice's password\n")
    assert made.returncode == 0, made.stderr
    spa = f"{server}/spa/"
    created = cli(tmp_path, "clients", "create", "Example SPA", "--redirect-uri", spa)
    assert created.returncode == 0, created.stderr
    fields = dict(line.split(": ", 1) for line in created.stdout.splitlines() if ": " in line)
    client_id = fields["client_id"]
    (spa_dir / "config.json").write_text(json.dumps({"client_id": client_id}))

    browser.get(spa)
    signed_out(browser)
    sign_in_on_hosted_page(browser, "alice", "alice's password")
    assert browser.execute_script("return location.search") == ""  # the code left the URL

    # The tokens are DPoP-bound to a key the page cannot export; the refresh token is useless
    # without it.
    tokens = browser.execute_script("return window.authsvcApp.state.tokens")
    assert tokens["token_type"] == "DPoP"
    assert claims_of(tokens["access_token"])["cnf"]["jkt"]
    key = public_key_of(browser)
    stolen = httpx.post(
        f"{server}/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
        },
    )
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"

    # Two more tabs: each finds the tokens and the key in IndexedDB.
    tabs = [browser.current_window_handle]
    for _ in range(2):
        browser.switch_to.new_window("tab")
        browser.get(spa)
        signed_in_as(browser, "alice")
        assert public_key_of(browser) == key
        tabs.append(browser.current_window_handle)

    # Let the access token expire, then have all three tabs call /auth/me at the same instant:
    # each gets a 401; one refreshes, the others take its tokens; none is logged out.
    time.sleep(ACCESS_TTL + 1)
    at = browser.execute_script("return Date.now() + 1500")
    for handle in tabs:
        browser.switch_to.window(handle)
        browser.execute_script("window.authsvcApp.meAt(arguments[0])", at)
    refreshes = adopted = 0
    for handle in tabs:
        browser.switch_to.window(handle)
        last = wait_for(browser, "return window.authsvcApp.state.lastMe", timeout=30)
        assert last == {"status": 200, "username": "alice"}, log_of(browser)
        assert status_of(browser) == "signed in as alice"
        counts = browser.execute_script(
            "const s = window.authsvcApp.state; return [s.refreshes, s.adopted]"
        )
        refreshes, adopted = refreshes + counts[0], adopted + counts[1]
    assert (refreshes, adopted) == (1, 2)
    rotated = browser.execute_script("return window.authsvcApp.state.tokens")
    assert rotated["refresh_token"] != tokens["refresh_token"]

    # Log out in the first tab: RP-initiated logout revokes the session and ends the hosted
    # page's sign-in; the browser comes back signed out and the other tabs are told.
    browser.switch_to.window(tabs[2])
    saved = browser.execute_script(
        "window.saved = {tokens: window.authsvcApp.state.tokens, key: window.authsvcApp.state.key};"
        "return true"
    )
    assert saved
    browser.switch_to.window(tabs[0])
    browser.execute_script("window.beforeLogout = true; document.getElementById('logout').click()")
    wait_for(browser, "return !window.beforeLogout && window.authsvcApp?.state.ready")
    signed_out(browser)
    assert "signed out" in log_of(browser)
    browser.switch_to.window(tabs[1])
    signed_out(browser)
    # The session is revoked: the old tokens, with their key, are refused.
    browser.switch_to.window(tabs[2])
    signed_out(browser)
    result = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.authsvcApp.state.tokens = window.saved.tokens;"
        "window.authsvcApp.state.key = window.saved.key;"
        "window.authsvcApp.me().then(done);"
    )
    assert result["status"] == 401
    assert status_of(browser) == "signed out"

    # Signing in again asks for the password: the hosted page's sign-in ended too.
    browser.switch_to.window(tabs[0])
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "login").click()
    wait_for(browser, "return location.pathname === '/oauth/authorize'")
    assert browser.find_elements(By.ID, "password")


@contextlib.contextmanager
def static_site(directory: Path) -> Iterator[str]:
    """`directory` served on its own origin, http://127.0.0.1:<port> (not the API's)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/index.html", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_spa_on_another_origin(tmp_path: Path, spa_dir: Path, browser: Any) -> None:
    """The page served from its own origin, the API on another: discovery, the token endpoint
    (a DPoP header, so a CORS preflight) and /auth/me answer the page's origin because
    AUTHSVC_CORS_ORIGINS names it; the hosted page and logout are top-level navigations."""
    made = cli(tmp_path, "users", "create", "alice", "--password-stdin", stdin="alice's password\n")
    assert made.returncode == 0, made.stderr
    with static_site(spa_dir) as site:
        spa = f"{site}/"
        with live_server(tmp_path, host="localhost", AUTHSVC_CORS_ORIGINS=site) as issuer:
            created = cli(tmp_path, "clients", "create", "Example SPA", "--redirect-uri", spa)
            assert created.returncode == 0, created.stderr
            fields = dict(
                line.split(": ", 1) for line in created.stdout.splitlines() if ": " in line
            )
            (spa_dir / "config.json").write_text(
                json.dumps({"client_id": fields["client_id"], "issuer": issuer})
            )

            browser.get(spa)
            signed_out(browser)
            sign_in_on_hosted_page(browser, "alice", "alice's password")
            assert browser.execute_script("return location.origin") == site
            tokens = browser.execute_script("return window.authsvcApp.state.tokens")
            assert tokens["token_type"] == "DPoP"

            refreshed = browser.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "window.authsvcApp.refresh(window.authsvcApp.state.tokens.access_token)"
                "  .then(async (ok) => done({ok, me: await window.authsvcApp.me()}));"
            )
            assert refreshed == {"ok": True, "me": {"status": 200, "username": "alice"}}, log_of(
                browser
            )
            assert browser.execute_script("return window.authsvcApp.state.refreshes") == 1
            rotated = browser.execute_script("return window.authsvcApp.state.tokens")
            assert rotated["refresh_token"] != tokens["refresh_token"]

            browser.execute_script(
                "window.beforeLogout = true; document.getElementById('logout').click()"
            )
            wait_for(browser, "return !window.beforeLogout && window.authsvcApp?.state.ready")
            signed_out(browser)
            assert browser.execute_script("return location.origin") == site
            # RP-initiated logout from the other origin revoked the session, and the hosted
            # page's sign-in (its SameSite=Lax cookie goes along on the navigation) with it.
            sessions = cli(tmp_path, "sessions", "list", "alice")
            assert sessions.returncode == 0, sessions.stderr
            assert sessions.stdout.strip() == "no live sessions for alice", sessions.stdout
