"""panva's openid-client (npm, run with node) as a relying party of a live authsvc: discovery,
the authorization URL with PKCE, the code exchange with the ID token validated by the library
(signature through the JWKS, iss, aud, exp, nonce; state and iss on the callback), userinfo and
a refresh; then the same with the library's DPoP (RFC 9449), whose bound token is refused as a
Bearer token. The hosted login is driven over HTTP like a browser without JavaScript.

The script and its pinned dependencies live in tests/interop/. When tests/interop/node_modules
is absent, `npm ci` installs them into a cache directory keyed by the lock file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import cli, live_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("node") is None or shutil.which("npm") is None,
        reason="node and npm are not installed",
    ),
]

INTEROP = Path(__file__).resolve().parent / "interop"
SCRIPT = "openid_client.mjs"
REDIRECT = "http://127.0.0.1:9/callback"  # nothing listens: the test reads the redirect
HIDDEN = r'<input type="hidden" name="([^"]+)" value="([^"]*)">'


def interop_dir() -> Path:
    """A directory holding the script next to an installed node_modules."""
    if (INTEROP / "node_modules").is_dir():
        return INTEROP
    lock = (INTEROP / "package-lock.json").read_bytes()
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = cache_root / "authsvc-interop" / hashlib.sha256(lock).hexdigest()[:16]
    target.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json", SCRIPT):
        shutil.copyfile(INTEROP / name, target / name)
    if not (target / "node_modules").is_dir():
        installed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=target,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert installed.returncode == 0, installed.stderr
    return target


def node(directory: Path, *args: str) -> dict[str, Any]:
    ran = subprocess.run(
        ["node", SCRIPT, *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    result: dict[str, Any] = json.loads(ran.stdout)
    return result


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with live_server(tmp_path) as base:
        yield base


def sign_in_like_a_browser(url: str, base: str, username: str, password: str) -> str:
    """GET the authorization URL, fill in the hosted form, post it; the redirect's Location."""
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        page = browser.get(url)
        assert page.status_code == 200, page.text
        fields = {unescape(k): unescape(v) for k, v in re.findall(HIDDEN, page.text)}
        fields.update(username=username, password=password, action="login")
        answer = browser.post(f"{base}/oauth/authorize", data=fields)
        assert answer.status_code == 303, answer.text
        return answer.headers["location"]


def test_openid_client_code_flow_id_token_userinfo_and_refresh(server: str, tmp_path: Path) -> None:
    directory = interop_dir()
    made = cli(tmp_path, "users", "create", "noor", "--password-stdin", stdin="noor's password\n")
    assert made.returncode == 0, made.stderr
    created = cli(tmp_path, "clients", "create", "Node app", "--redirect-uri", REDIRECT)
    assert created.returncode == 0, created.stderr
    fields = dict(line.split(": ", 1) for line in created.stdout.splitlines() if ": " in line)
    client_id = fields["client_id"]

    for dpop in (False, True):
        start = node(directory, "start", server, client_id, REDIRECT)
        assert "code_challenge_method=S256" in start["url"]
        assert start["url"].startswith(f"{server}/oauth/authorize?")
        callback = sign_in_like_a_browser(start["url"], server, "noor", "noor's password")
        assert callback.startswith(REDIRECT + "?")
        checks = (start["verifier"], start["state"], start["nonce"])
        mode = ("dpop",) if dpop else ()
        done = node(directory, "finish", server, client_id, callback, *checks, *mode)

        claims = done["claims"]
        assert claims["iss"] == server
        assert claims["aud"] == client_id
        assert claims["nonce"] == start["nonce"]
        assert done["userinfo"]["sub"] == claims["sub"]
        assert done["userinfo"]["preferred_username"] == "noor"
        assert done["refreshed"]["rotated"] is True
        expected = "dpop" if dpop else "bearer"
        assert done["token_type"].lower() == done["refreshed"]["token_type"].lower() == expected
        as_bearer = httpx.get(
            f"{server}/oauth/userinfo",
            headers={"Authorization": f"Bearer {done['access_token']}"},
        )
        assert as_bearer.status_code == (401 if dpop else 200), as_bearer.text
