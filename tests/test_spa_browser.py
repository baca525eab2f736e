"""The example SPA (examples/spa) in headless Chromium against a live authsvc: log in, call
/auth/me, refresh on 401 in three tabs at once without being logged out, log out."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import cli, live_server

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
def server(tmp_path: Path) -> Iterator[str]:
    # `localhost`, not 127.0.0.1: Chromium treats http://localhost as a secure context, so it
    # keeps the Secure __Host- cookie there, and the issuer's origin is the allowed one.
    with live_server(
        tmp_path,
        host="localhost",
        AUTHSVC_SPA_DIR=str(SPA_DIR),
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


def wait_for(driver: Any, script: str, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}\n{log_of(driver)}")


def log_of(driver: Any) -> str:
    return str(driver.execute_script("return document.getElementById('log').textContent"))


def status_of(driver: Any) -> str:
    return str(driver.execute_script("return document.getElementById('status').textContent"))


def test_spa_login_multi_tab_refresh_and_logout(server: str, tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    made = cli(tmp_path, "users", "create", "alice", "--password-stdin", stdin="alice's password\n")
    assert made.returncode == 0, made.stderr
    spa = f"{server}/spa/"

    browser.get(spa)
    wait_for(browser, "return document.getElementById('status').textContent === 'signed out'")
    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys("alice's password")
    browser.find_element(By.ID, "login").click()
    wait_for(browser, "return document.getElementById('status').textContent.includes('alice')")

    # The refresh token is a __Host- cookie the page's script cannot read.
    cookies = {c["name"]: c for c in browser.get_cookies()}
    rt = cookies["__Host-authsvc_rt"]
    assert rt["httpOnly"] and rt["secure"] and rt["sameSite"] == "Strict" and rt["path"] == "/"
    assert "authsvc_rt" not in browser.execute_script("return document.cookie")

    # Two more tabs: each gets its own access token from the shared cookie.
    tabs = [browser.current_window_handle]
    for _ in range(2):
        browser.switch_to.new_window("tab")
        browser.get(spa)
        wait_for(browser, "return document.getElementById('status').textContent.includes('alice')")
        tabs.append(browser.current_window_handle)

    # Let every tab's access token expire, then have all three call /auth/me at the same
    # instant: each gets a 401, refreshes, retries, and none is logged out.
    time.sleep(ACCESS_TTL + 1)
    at = browser.execute_script("return Date.now() + 1500")
    before = {}
    for handle in tabs:
        browser.switch_to.window(handle)
        before[handle] = browser.execute_script("return window.authsvcApp.state.refreshes")
        browser.execute_script("window.authsvcApp.meAt(arguments[0])", at)
    for handle in tabs:
        browser.switch_to.window(handle)
        last = wait_for(browser, "return window.authsvcApp.state.lastMe", timeout=15)
        assert last == {"status": 200, "username": "alice"}, log_of(browser)
        assert status_of(browser) == "signed in as alice"
        refreshes = browser.execute_script("return window.authsvcApp.state.refreshes")
        assert refreshes == before[handle] + 1, log_of(browser)

    # Log out in the first tab: the cookie is gone, the other tabs are told, and their
    # remaining access tokens are refused (their session is revoked).
    browser.switch_to.window(tabs[0])
    browser.find_element(By.ID, "logout").click()
    wait_for(browser, "return document.getElementById('status').textContent === 'signed out'")
    assert "__Host-authsvc_rt" not in {c["name"] for c in browser.get_cookies()}
    browser.switch_to.window(tabs[1])
    wait_for(browser, "return document.getElementById('status').textContent === 'signed out'")
    browser.switch_to.window(tabs[2])
    result = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.authsvcApp.state.accessToken = 'x';"  # as if it still held its old token
        "window.authsvcApp.me().then(done);"
    )
    assert result["status"] == 401
    assert status_of(browser) == "signed out"
