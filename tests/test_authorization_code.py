"""The authorization code flow over HTTP against the ASGI app: the hosted login and consent
pages, the code exchange with PKCE, ID tokens, and the attacks the flow must refuse (RFC 6749
section 10, RFC 9700 section 4)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from sqlalchemy import select

from authsvc.app import create_app
from authsvc.clock import MovableClock
from authsvc.config import Settings
from authsvc.security.authorization_codes import s256
from authsvc.services.authorize import BROWSER_CLIENT
from authsvc.services.maintenance import prune
from authsvc.state import AppState
from authsvc.store.models import AuditEvent, RevocationEvent, Session
from tests.conftest import PASSWORD, sql_sent

pytestmark = pytest.mark.anyio

ISSUER = "https://auth.test"
REDIRECT = "https://app.example/callback"


@dataclass
class Flow:
    http: httpx.AsyncClient
    state: AppState
    clock: MovableClock

    async def client(
        self,
        *,
        confidential: bool = False,
        first_party: bool = True,
        redirect_uris: tuple[str, ...] = (REDIRECT,),
        grants: tuple[str, ...] = ("authorization_code", "refresh_token"),
    ) -> tuple[str, str | None]:
        async with self.state.database.transaction() as db:
            made = await self.state.clients.create(
                db,
                "Example app",
                self.clock.now(),
                confidential=confidential,
                grant_types=grants,
                redirect_uris=redirect_uris,
                first_party=first_party,
                actor="test",
            )
        return made.client.client_id, made.secret


@pytest.fixture
async def flow(settings: Settings, clock: MovableClock) -> AsyncIterator[Flow]:
    app = create_app(settings, clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 50000))
        # https, like the issuer: the page's cookies are Secure and __Host- prefixed.
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            state: AppState = app.state.authsvc
            async with state.database.transaction() as db:
                await state.users.create(db, "alice", PASSWORD, clock.now(), [])
            yield Flow(http, state, clock)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


def request_params(client_id: str, challenge: str | None, **extra: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid api",
        "state": "st-" + secrets.token_urlsafe(8),
        "nonce": "n-" + secrets.token_urlsafe(8),
    }
    if challenge is not None:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    params.update(extra)
    return {k: v for k, v in params.items() if v != ""}


def form_fields(page: httpx.Response) -> dict[str, str]:
    """The hidden fields of the page's form (what a browser would post back)."""
    found = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text)
    return {unescape(k): unescape(v) for k, v in found}


def redirect_query(response: httpx.Response) -> dict[str, str]:
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def sign_in(
    flow: Flow, page: httpx.Response, username: str = "alice", password: str = PASSWORD
) -> httpx.Response:
    fields = {**form_fields(page), "username": username, "password": password, "action": "login"}
    return await flow.http.post("/oauth/authorize", data=fields)


async def code_for(flow: Flow, client_id: str, challenge: str | None, **extra: str) -> str:
    page = await flow.http.get(
        "/oauth/authorize", params=request_params(client_id, challenge, **extra)
    )
    if page.status_code == 200:
        page = await sign_in(flow, page)
    assert page.status_code in (302, 303), page.text
    return redirect_query(page)["code"]


async def exchange(
    flow: Flow,
    client_id: str,
    code: str,
    verifier: str | None,
    *,
    redirect_uri: str = REDIRECT,
    secret: str | None = None,
) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier is not None:
        data["code_verifier"] = verifier
    if secret is not None:
        return await flow.http.post("/oauth/token", data=data, auth=(client_id, secret))
    data["client_id"] = client_id
    return await flow.http.post("/oauth/token", data=data)


async def verify_id_token(flow: Flow, token: str, client_id: str) -> dict[str, Any]:
    jwks = (await flow.http.get("/.well-known/jwks.json")).json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid))
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience=client_id,
        issuer=ISSUER,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "auth_time"]},
    )
    return claims


# -- the flow ------------------------------------------------------------------------------------


async def test_code_flow_with_pkce_issues_tokens_and_an_id_token(flow: Flow) -> None:
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    params = request_params(client_id, challenge)
    page = await flow.http.get("/oauth/authorize", params=params)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert "form-action 'self' https://app.example" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert '<label for="username">' in page.text and '<label for="password">' in page.text
    assert "Example app" in page.text
    csrf_cookie = page.headers["set-cookie"]
    assert csrf_cookie.startswith("__Host-authsvc_csrf=")
    assert all(a in csrf_cookie.lower() for a in ("secure", "httponly", "samesite=lax", "path=/"))

    answer = await sign_in(flow, page)
    assert answer.status_code == 303  # after a POST (RFC 9700 section 4.12)
    query = redirect_query(answer)
    assert query["state"] == params["state"]
    assert query["iss"] == ISSUER  # RFC 9207
    assert query["code"].startswith("ac_")
    login_cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("__Host-authsvc_login=")
    )
    assert all(a in login_cookie.lower() for a in ("secure", "httponly", "samesite=lax"))

    tokens = await exchange(flow, client_id, query["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert tokens.headers["cache-control"] == "no-store"
    assert body["token_type"] == "Bearer" and body["scope"] == "openid api"
    assert body["refresh_token"].startswith("rt_")
    me = await flow.http.get(
        "/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 200 and me.json()["username"] == "alice"

    claims = await verify_id_token(flow, body["id_token"], client_id)
    assert claims["nonce"] == params["nonce"]
    assert claims["azp"] == client_id and claims["amr"] == ["pwd"]
    assert claims["sub"] == me.json()["id"] and claims["sid"] == me.json()["session_id"]
    assert abs(claims["auth_time"] - flow.clock.now().timestamp()) < 2
    # at_hash: the left half of the access token's SHA-256, base64url (OIDC Core 3.1.3.6).
    half = hashlib.sha256(body["access_token"].encode()).digest()[:16]
    assert claims["at_hash"] == base64.urlsafe_b64encode(half).rstrip(b"=").decode()

    # A refresh of an openid session: a new ID token, same auth_time, no nonce.
    refreshed = await flow.http.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": client_id,
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    again = await verify_id_token(flow, refreshed.json()["id_token"], client_id)
    assert again["auth_time"] == claims["auth_time"] and "nonce" not in again
    assert again["sid"] == claims["sid"] and again["at_hash"] != claims["at_hash"]


async def test_without_openid_no_id_token(flow: Flow) -> None:
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    code = await code_for(flow, client_id, challenge, scope="api")
    body = (await exchange(flow, client_id, code, verifier)).json()
    assert body["scope"] == "api" and "id_token" not in body


async def test_signed_in_browser_skips_the_password_until_prompt_login(flow: Flow) -> None:
    client_id, _ = await flow.client()
    _, challenge = pkce()
    await code_for(flow, client_id, challenge)
    again = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    assert again.status_code == 302 and "code" in redirect_query(again)
    forced = await flow.http.get(
        "/oauth/authorize", params=request_params(client_id, challenge, prompt="login")
    )
    assert forced.status_code == 200 and 'name="password"' in forced.text
    # Signing in again from a forced login does not loop back to the form.
    assert (await sign_in(flow, forced)).status_code == 303

    flow.http.cookies.clear()
    silent = await flow.http.get(
        "/oauth/authorize", params=request_params(client_id, challenge, prompt="none")
    )
    assert silent.status_code == 302
    assert redirect_query(silent)["error"] == "login_required"


async def test_logging_out_ends_the_sign_in_cookie(flow: Flow) -> None:
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    code = await code_for(flow, client_id, challenge)
    access = (await exchange(flow, client_id, code, verifier)).json()["access_token"]
    out = await flow.http.post(
        "/auth/logout", json={"scope": "global"}, headers={"Authorization": f"Bearer {access}"}
    )
    assert out.status_code == 204
    page = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    assert page.status_code == 200 and 'name="password"' in page.text


async def test_rp_initiated_logout_ends_the_browser_sign_in(flow: Flow) -> None:
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    code = await code_for(flow, client_id, challenge)
    tokens = (await exchange(flow, client_id, code, verifier)).json()
    cookie = flow.http.cookies["__Host-authsvc_login"]
    out = await flow.http.get("/oauth/logout", params={"id_token_hint": tokens["id_token"]})
    assert out.status_code == 200, out.text
    assert "__Host-authsvc_login" not in flow.http.cookies  # cleared by the answer
    page = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    assert page.status_code == 200 and 'name="password"' in page.text
    # The sign-in's server-side session is over too: the old cookie signs no one in.
    flow.http.cookies.set("__Host-authsvc_login", cookie, domain="auth.test")
    page = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    assert page.status_code == 200 and 'name="password"' in page.text
    # Logging out again is no error, and a cookie that signs no one in is cleared.
    flow.http.cookies.set("__Host-authsvc_login", cookie, domain="auth.test")
    again = await flow.http.get("/oauth/logout", params={"id_token_hint": tokens["id_token"]})
    assert again.status_code == 200 and "__Host-authsvc_login" not in flow.http.cookies
    refreshed = await flow.http.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
        },
    )
    assert refreshed.status_code == 400


async def test_rp_initiated_logout_leaves_another_users_browser_sign_in(flow: Flow) -> None:
    """A link carrying someone else's ID token cannot sign this browser out."""
    async with flow.state.database.transaction() as db:
        await flow.state.users.create(db, "bob", PASSWORD, flow.clock.now(), [])
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    page = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    bob_code = redirect_query(await sign_in(flow, page, "bob"))["code"]
    bob = (await exchange(flow, client_id, bob_code, verifier)).json()
    flow.http.cookies.clear()
    await code_for(flow, client_id, challenge)  # alice signs in in this browser
    out = await flow.http.get("/oauth/logout", params={"id_token_hint": bob["id_token"]})
    assert out.status_code == 200, out.text
    assert "set-cookie" not in out.headers
    again = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    assert again.status_code == 302 and "code" in redirect_query(again)


async def test_third_party_client_asks_for_consent_each_time(flow: Flow) -> None:
    client_id, _ = await flow.client(first_party=False)
    _, challenge = pkce()
    page = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    consent = await sign_in(flow, page)
    assert consent.status_code == 200 and "Allow access?" in consent.text
    assert "Know who you are" in consent.text and "Use “api” on your behalf" in consent.text
    fields = form_fields(consent)
    denied = await flow.http.post("/oauth/authorize", data={**fields, "action": "deny"})
    assert denied.status_code == 303
    assert redirect_query(denied)["error"] == "access_denied"
    allowed = await flow.http.post("/oauth/authorize", data={**fields, "action": "allow"})
    assert allowed.status_code == 303 and "code" in redirect_query(allowed)
    # Nothing remembered: asked again; prompt=none cannot ask.
    again = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    assert again.status_code == 200 and "Allow access?" in again.text
    silent = await flow.http.get(
        "/oauth/authorize", params=request_params(client_id, challenge, prompt="none")
    )
    assert redirect_query(silent)["error"] == "consent_required"


async def test_not_you_signs_out_and_shows_the_login_form(flow: Flow) -> None:
    client_id, _ = await flow.client(first_party=False)
    _, challenge = pkce()
    page = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    consent = await sign_in(flow, page)
    out = await flow.http.post(
        "/oauth/authorize", data={**form_fields(consent), "action": "logout"}
    )
    assert out.status_code == 200 and 'name="password"' in out.text
    assert "__Host-authsvc_login" not in flow.http.cookies
    again = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    assert 'name="password"' in again.text


async def browser_sign_in_ended(flow: Flow) -> tuple[AuditEvent, RevocationEvent]:
    """The logout audit row and the feed event of the one browser sign-in, which has ended."""
    async with flow.state.database.read() as db:
        session = (
            await db.execute(select(Session).where(Session.client_id == BROWSER_CLIENT))
        ).scalar_one()
        assert session.revoked_at is not None
        audited = (
            await db.execute(
                select(AuditEvent).where(
                    AuditEvent.session_id == session.id, AuditEvent.event == "logout"
                )
            )
        ).scalar_one()
        fed = (
            await db.execute(
                select(RevocationEvent).where(RevocationEvent.value == str(session.id))
            )
        ).scalar_one()
    assert audited.user_id == session.user_id
    assert audited.details is not None and audited.details["client_id"] == BROWSER_CLIENT
    assert audited.details["sessions_revoked"] == 1
    assert fed.kind == "sid"
    return audited, fed


async def test_not_you_is_audited_and_fed_like_any_logout(flow: Flow) -> None:
    client_id, _ = await flow.client(first_party=False)
    _, challenge = pkce()
    page = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    consent = await sign_in(flow, page)
    await flow.http.post("/oauth/authorize", data={**form_fields(consent), "action": "logout"})
    audited, _ = await browser_sign_in_ended(flow)
    assert audited.ip == "203.0.113.9" and audited.details == {
        "scope": "local",
        "sessions_revoked": 1,
        "client_id": BROWSER_CLIENT,
        "via": "logout",
    }


async def test_signing_in_again_audits_the_sign_in_it_replaces(flow: Flow) -> None:
    client_id, _ = await flow.client()
    _, challenge = pkce()
    await code_for(flow, client_id, challenge)
    forced = await flow.http.get(
        "/oauth/authorize", params=request_params(client_id, challenge, prompt="login")
    )
    assert (await sign_in(flow, forced)).status_code == 303
    async with flow.state.database.read() as db:
        old, new = (
            (
                await db.execute(
                    select(Session)
                    .where(Session.client_id == BROWSER_CLIENT)
                    .order_by(Session.revoked_at.is_(None))
                )
            )
            .scalars()
            .all()
        )
        audited = (
            await db.execute(select(AuditEvent).where(AuditEvent.event == "logout"))
        ).scalar_one()
        fed = (
            await db.execute(select(RevocationEvent).where(RevocationEvent.value == str(old.id)))
        ).scalar_one()
    assert old.revoked_reason == "login_replaced" and new.revoked_at is None
    assert audited.session_id == old.id and audited.user_id == old.user_id
    assert audited.ip == "203.0.113.9" and audited.details == {
        "scope": "local",
        "sessions_revoked": 1,
        "client_id": BROWSER_CLIENT,
        "via": "login_replaced",
    }
    assert fed.kind == "sid"


async def test_a_malformed_sign_in_cookie_is_answered_as_an_unknown_one(flow: Flow) -> None:
    client_id, _ = await flow.client()
    _, challenge = pkce()
    await code_for(flow, client_id, challenge)
    signed_in = flow.http.cookies["__Host-authsvc_login"]
    for cookie in (
        "rt_" + "A" * 43,  # well formed, issued to no one
        "x",
        signed_in[:-1],
        signed_in + "A",
        "at_" + signed_in[3:],
        signed_in[:-1] + "+",
        "rt_" + "A" * 500,
    ):
        flow.http.cookies.clear()
        flow.http.cookies.set("__Host-authsvc_login", cookie, domain="auth.test")
        with sql_sent(flow.state) as sent:
            page = await flow.http.get(
                "/oauth/authorize", params=request_params(client_id, challenge)
            )
        assert page.status_code == 200 and 'name="password"' in page.text, cookie
        if cookie != "rt_" + "A" * 43:
            # Refused on its shape, before the token is looked up.
            assert not [s for s in sent if "refresh_tokens" in s], cookie
        flow.http.cookies.set("__Host-authsvc_login", cookie, domain="auth.test")
        silent = await flow.http.get(
            "/oauth/authorize", params=request_params(client_id, challenge, prompt="none")
        )
        assert redirect_query(silent)["error"] == "login_required", cookie


async def test_rp_initiated_logout_audits_the_browser_sign_in_it_ends(flow: Flow) -> None:
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    code = await code_for(flow, client_id, challenge)
    tokens = (await exchange(flow, client_id, code, verifier)).json()
    out = await flow.http.get("/oauth/logout", params={"id_token_hint": tokens["id_token"]})
    assert out.status_code == 200, out.text
    audited, _ = await browser_sign_in_ended(flow)
    assert audited.details is not None and audited.details["via"] == "end_session"


async def test_max_age_and_prompt_consent(flow: Flow) -> None:
    client_id, _ = await flow.client()
    _, challenge = pkce()
    await code_for(flow, client_id, challenge)
    flow.clock.advance(120)
    fresh_enough = await flow.http.get(
        "/oauth/authorize", params=request_params(client_id, challenge, max_age="600")
    )
    assert fresh_enough.status_code == 302
    too_old = await flow.http.get(
        "/oauth/authorize", params=request_params(client_id, challenge, max_age="60")
    )
    assert too_old.status_code == 200 and 'name="password"' in too_old.text
    asked = await flow.http.get(
        "/oauth/authorize", params=request_params(client_id, challenge, prompt="consent")
    )
    assert asked.status_code == 200 and "Allow access?" in asked.text


async def test_missing_state_is_accepted_and_nothing_is_echoed(flow: Flow) -> None:
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    page = await flow.http.get(
        "/oauth/authorize", params=request_params(client_id, challenge, state="")
    )
    answer = await sign_in(flow, page)
    query = redirect_query(answer)
    assert "state" not in query and query["iss"] == ISSUER
    assert (await exchange(flow, client_id, query["code"], verifier)).status_code == 200


async def test_wrong_password_gets_the_generic_message(flow: Flow) -> None:
    client_id, _ = await flow.client()
    _, challenge = pkce()
    page = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    for name in ("alice", "nobody"):
        failed = await sign_in(flow, page, username=name, password="wrong password")
        assert failed.status_code == 401
        assert "Invalid username or password." in failed.text
        assert 'role="alert"' in failed.text and "location" not in failed.headers


@pytest.mark.parametrize(
    "settings_overrides",
    [{"rate_limit_enabled": True, "login_backoff_free_failures": 0, "rate_limit_login_per_ip": 50}],
)
async def test_login_page_has_the_login_backoff(flow: Flow) -> None:
    client_id, _ = await flow.client()
    _, challenge = pkce()
    page = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    assert (await sign_in(flow, page, password="wrong")).status_code == 401
    throttled = await sign_in(flow, page)  # even the right password waits out the backoff
    assert throttled.status_code == 429 and "retry-after" in throttled.headers
    assert "Too many sign-in attempts" in throttled.text


# -- attacks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://app.example/callback/../evil",  # suffix
        "https://app.example/callbackx",  # suffix
        "https://app.example/call",  # prefix
        "https://app.example:8443/callback",  # other port
        "https://evil.example/callback",  # open redirect
        "https://app.example/callback?next=https://evil.example",
        "https://app.example.evil.example/callback",
        "http://app.example/callback",
        "",
    ],
)
async def test_unregistered_redirect_uri_gets_a_page_never_a_redirect(
    flow: Flow, redirect_uri: str
) -> None:
    client_id, _ = await flow.client()
    _, challenge = pkce()
    params = request_params(client_id, challenge, redirect_uri=redirect_uri)
    page = await flow.http.get("/oauth/authorize", params=params)
    assert page.status_code == 400 and "location" not in page.headers
    assert "Cannot continue" in page.text
    # A POST naming it is refused the same way, even with a good password.
    posted = await flow.http.post(
        "/oauth/authorize",
        data={**params, "username": "alice", "password": PASSWORD, "action": "login"},
    )
    assert posted.status_code == 400 and "location" not in posted.headers


async def test_unknown_client_and_repeated_redirect_uri_get_a_page(flow: Flow) -> None:
    client_id, _ = await flow.client()
    _, challenge = pkce()
    unknown = await flow.http.get(
        "/oauth/authorize", params=request_params("no-such-client", challenge)
    )
    assert unknown.status_code == 400 and "location" not in unknown.headers
    query = urlencode(request_params(client_id, challenge)) + "&redirect_uri=" + REDIRECT
    repeated = await flow.http.get("/oauth/authorize?" + query)
    assert repeated.status_code == 400 and "location" not in repeated.headers


async def test_other_request_errors_redirect_with_state_and_iss(flow: Flow) -> None:
    client_id, _ = await flow.client()
    no_code_grant, _ = await flow.client(grants=("password", "refresh_token"))
    _, challenge = pkce()
    cases = [
        (client_id, {"response_type": "token"}, "unsupported_response_type"),
        (client_id, {"scope": "admin"}, "invalid_scope"),
        (client_id, {"prompt": "none login"}, "invalid_request"),
        (no_code_grant, {}, "unauthorized_client"),
    ]
    for cid, extra, error in cases:
        params = request_params(cid, challenge, **extra)
        answer = await flow.http.get("/oauth/authorize", params=params)
        assert answer.status_code == 302, (extra, answer.text)
        query = redirect_query(answer)
        assert query["error"] == error and query["state"] == params["state"]
        assert query["iss"] == ISSUER


async def test_pkce_downgrade_is_refused(flow: Flow) -> None:
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    for extra in (
        {"code_challenge": verifier, "code_challenge_method": "plain"},
        {"code_challenge": challenge, "code_challenge_method": ""},  # absent means plain
        {"code_challenge": "", "code_challenge_method": ""},  # public clients must use PKCE
        {"code_challenge": "short", "code_challenge_method": "S256"},
    ):
        answer = await flow.http.get(
            "/oauth/authorize", params=request_params(client_id, None, **extra)
        )
        assert redirect_query(answer)["error"] == "invalid_request", extra

    code = await code_for(flow, client_id, challenge)
    missing = await exchange(flow, client_id, code, None)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_grant"
    wrong = await exchange(flow, client_id, code, pkce()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    as_plain = await exchange(flow, client_id, code, challenge)
    assert as_plain.json()["error"] == "invalid_grant"
    # Refused checks spend nothing: the real verifier still works, once.
    assert (await exchange(flow, client_id, code, verifier)).status_code == 200


async def test_confidential_client_may_skip_pkce_but_not_send_a_stray_verifier(
    flow: Flow,
) -> None:
    client_id, secret = await flow.client(confidential=True)
    code = await code_for(flow, client_id, None)
    stray = await exchange(flow, client_id, code, pkce()[0], secret=secret)
    assert stray.json()["error"] == "invalid_grant"
    ok = await exchange(flow, client_id, code, None, secret=secret)
    assert ok.status_code == 200, ok.text
    unauthenticated = await exchange(flow, client_id, code, None)
    assert unauthenticated.status_code == 401


async def test_reused_code_is_refused_and_revokes_its_session(flow: Flow) -> None:
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    code = await code_for(flow, client_id, challenge)
    first = await exchange(flow, client_id, code, verifier)
    assert first.status_code == 200
    tokens = first.json()
    second = await exchange(flow, client_id, code, verifier)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    assert "already used" in second.json()["error_description"]
    me = await flow.http.get(
        "/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 401
    refresh = await flow.http.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
        },
    )
    assert refresh.json()["error"] == "invalid_grant"


async def test_concurrent_exchanges_of_one_code_issue_one_pair(flow: Flow) -> None:
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    code = await code_for(flow, client_id, challenge)
    answers = await asyncio.gather(*(exchange(flow, client_id, code, verifier) for _ in range(3)))
    assert sorted(a.status_code for a in answers) == [200, 400, 400]


async def test_code_injected_into_another_client_is_refused(flow: Flow) -> None:
    victim, _ = await flow.client()
    attacker, _ = await flow.client()
    verifier, challenge = pkce()
    code = await code_for(flow, victim, challenge)
    stolen = await exchange(flow, attacker, code, verifier)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    # The other client could not spend it either.
    assert (await exchange(flow, victim, code, verifier)).status_code == 200


async def test_redirect_uri_must_match_at_the_token_endpoint(flow: Flow) -> None:
    other = "https://app.example/other"
    client_id, _ = await flow.client(redirect_uris=(REDIRECT, other))
    verifier, challenge = pkce()
    code = await code_for(flow, client_id, challenge)
    for uri in (other, REDIRECT + "/", ""):
        refused = await exchange(flow, client_id, code, verifier, redirect_uri=uri)
        assert refused.status_code == 400, uri
    assert (await exchange(flow, client_id, code, verifier)).status_code == 200


async def test_expired_code_is_refused(flow: Flow) -> None:
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    code = await code_for(flow, client_id, challenge)
    flow.clock.advance(61)
    late = await exchange(flow, client_id, code, verifier)
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"


async def test_login_form_refuses_cross_site_posts(flow: Flow) -> None:
    client_id, _ = await flow.client()
    _, challenge = pkce()
    page = await flow.http.get("/oauth/authorize", params=request_params(client_id, challenge))
    fields = {**form_fields(page), "username": "alice", "password": PASSWORD, "action": "login"}

    forged = await flow.http.post("/oauth/authorize", data={**fields, "csrf_token": "x" * 43})
    assert forged.status_code == 403 and "location" not in forged.headers
    other_origin = await flow.http.post(
        "/oauth/authorize", data=fields, headers={"Origin": "https://evil.example"}
    )
    assert other_origin.status_code == 403
    # Another browser (no CSRF cookie) posting this browser's token.
    async with httpx.AsyncClient(transport=flow.http._transport, base_url=ISSUER) as other:
        stranger = await other.post("/oauth/authorize", data=fields)
    assert stranger.status_code == 403
    same_origin = await flow.http.post("/oauth/authorize", data=fields, headers={"Origin": ISSUER})
    assert same_origin.status_code == 303


async def test_spent_and_expired_codes_are_pruned_a_day_later(flow: Flow) -> None:
    client_id, _ = await flow.client()
    verifier, challenge = pkce()
    spent = await code_for(flow, client_id, challenge)
    assert (await exchange(flow, client_id, spent, verifier)).status_code == 200
    await code_for(flow, client_id, challenge)  # never exchanged
    flow.clock.advance(3600)
    report = await prune(flow.state.database, flow.state.keys, flow.clock.now())
    assert report.authorization_codes == 0
    # Within the day, a replay is still recognised as reuse.
    assert "already used" in (await exchange(flow, client_id, spent, verifier)).text
    flow.clock.advance(86400)
    report = await prune(flow.state.database, flow.state.keys, flow.clock.now())
    assert report.authorization_codes == 2
