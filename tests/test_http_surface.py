"""The HTTP surface: security and cache headers on every response, CORS, header size limit and
Authorization parsing."""

from __future__ import annotations

import base64
import hashlib
import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIRouter

from authsvc import api
from authsvc.api import browser
from authsvc.api.http_guard import CSP
from authsvc.app import create_app
from authsvc.config import ConfigError, load_settings
from tests.conftest import PASSWORD, TEST_KEK, Harness, make_settings


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """Request handling, not storage, is under test here: SQLite alone."""
    return sqlite_url


pytestmark = pytest.mark.anyio

SECURITY = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_security_headers(response: httpx.Response, csp: bool = True) -> None:
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value, (response.request.url, name)
    if csp:
        assert response.headers.get("content-security-policy") == CSP
    else:
        assert "content-security-policy" not in response.headers


def assert_no_store(response: httpx.Response) -> None:
    assert response.headers.get("cache-control") == "no-store", response.request.url
    assert response.headers.get("pragma") == "no-cache", response.request.url


async def test_every_response_carries_security_and_no_store_headers(harness: Harness) -> None:
    await harness.create_user()
    tokens = await harness.login()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    client = harness.client
    responses = [
        await client.post("/auth/login", json={"username": "alice", "password": PASSWORD}),
        await client.post("/auth/login", json={"username": "alice", "password": "wrong one!"}),
        await client.post("/auth/login", json={"username": 1}),
        await client.post("/auth/login", content=b"x" * 100_000),
        await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
        await client.post("/auth/refresh", json={"refresh_token": "rt_nope"}),
        await client.get("/auth/me", headers=bearer),
        await client.get("/auth/me"),
        await client.get("/healthz"),
        await client.get("/readyz"),
        await client.get("/openapi.json"),
        await client.get("/nope"),
        await client.put("/auth/login"),
        await client.post("/auth/logout", headers=bearer),
    ]
    for response in responses:
        assert response.status_code < 500, response.text
        assert_security_headers(response)
        assert_no_store(response)


async def test_token_responses_are_never_cached(harness: Harness) -> None:
    """RFC 6749 section 5.1, on every response that carries a token, including grace retries."""
    await harness.create_user()
    login = await harness.client.post(
        "/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    first = login.json()["refresh_token"]
    rotated = await harness.refresh(first)
    retried = await harness.refresh(first)  # honest retry inside the grace window
    assert retried.status_code == 200
    for response in (login, rotated, retried):
        assert "refresh_token" in response.json()
        assert_no_store(response)


async def test_jwks_keeps_its_own_caching(harness: Harness) -> None:
    response = await harness.client.get("/.well-known/jwks.json")
    assert response.headers["cache-control"].startswith("public, max-age=")
    assert "pragma" not in response.headers
    assert_security_headers(response)


def csp_directives(response: httpx.Response) -> dict[str, list[str]]:
    policy = response.headers["content-security-policy"]
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in policy.split(";")) if d}


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_pages_carry_a_csp_naming_exactly_their_assets(
    harness: Harness, path: str
) -> None:
    response = await harness.client.get(path)
    assert response.status_code == 200
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value
    policy = csp_directives(response)
    assert policy["default-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]
    page = response.text
    external = set(re.findall(r'(?:src|href)="(https?://[^"]+)"', page))
    assert external and {urlsplit(url).netloc for url in external} == {"cdn.jsdelivr.net"}
    hosts = {s for s in policy["script-src"] if not s.startswith("'")}
    assert hosts == {"https://cdn.jsdelivr.net"}
    # Every inline script is allowed by its hash, and nothing else inline runs.
    assert "'unsafe-inline'" not in policy["script-src"]
    for body in re.findall(r"<script>(.*?)</script>", page, re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy["script-src"]


async def test_docs_are_off_in_production_unless_enabled(settings: Any) -> None:
    production = settings.model_copy(update={"env": "production"})
    for overrides, status in [({}, 404), ({"api_docs_enabled": True}, 200)]:
        app = create_app(production.model_copy(update=overrides))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for path in ("/docs", "/redoc"):
                response = await client.get(path)
                assert response.status_code == status, (overrides, path)
                if status == 404:
                    assert_security_headers(response)
    assert load_settings(env="development").docs_enabled
    assert not load_settings(
        env="production", key_encryption_key=TEST_KEK, database_url="sqlite:///x.db"
    ).docs_enabled


@pytest.mark.parametrize(
    "issuer", ["http://auth.example", "http://auth.example:8000", "http://10.0.0.1"]
)
def test_production_refuses_a_plain_http_issuer(issuer: str) -> None:
    with pytest.raises(ConfigError, match="AUTHSVC_ISSUER"):
        load_settings(
            env="production",
            key_encryption_key=TEST_KEK,
            database_url="sqlite:///x.db",
            issuer=issuer,
        )


@pytest.mark.parametrize(
    "issuer",
    ["https://auth.example", "http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]"],
)
def test_production_accepts_https_and_loopback_issuers(issuer: str) -> None:
    settings = load_settings(
        env="production", key_encryption_key=TEST_KEK, database_url="sqlite:///x.db", issuer=issuer
    )
    assert settings.issuer == issuer


async def test_cors_is_off_by_default(harness: Harness) -> None:
    origin = {"Origin": "https://app.example"}
    response = await harness.client.get("/healthz", headers=origin)
    assert "access-control-allow-origin" not in response.headers
    preflight = await harness.client.options(
        "/auth/login", headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize(
    "settings_overrides", [{"cors_origins": "https://app.example, https://admin.example/"}]
)
async def test_cors_allows_only_listed_origins(harness: Harness) -> None:
    for origin in ("https://app.example", "https://admin.example"):
        preflight = await harness.client.options(
            "/auth/login",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        assert "access-control-allow-credentials" not in preflight.headers
    response = await harness.client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = await harness.client.options(
        "/auth/login",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_wildcard_origin_with_credentials_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        load_settings(cors_origins="*", cors_allow_credentials=True)


async def test_oversized_request_headers_get_431(harness: Harness) -> None:
    limit = harness.state.settings.max_header_bytes
    response = await harness.client.get("/healthz", headers={"X-Junk": "a" * limit})
    assert response.status_code == 431
    assert response.json()["error"] == "headers_too_large"
    assert_security_headers(response)
    # Many small headers add up too.
    many = {f"X-H{i}": "v" * 100 for i in range(limit // 100)}
    assert (await harness.client.get("/healthz", headers=many)).status_code == 431
    assert (await harness.client.get("/healthz", headers={"X-Ok": "a" * 1000})).status_code == 200


async def test_errors_before_routing_take_the_endpoints_shape(
    harness: Harness,
) -> None:
    # Found before any route runs (header size, repeated header, body size), yet answered as
    # the endpoint answers its own errors: RFC 6749 section 5.2 on /oauth, ours elsewhere.
    limit = harness.state.settings.max_header_bytes
    junk = {"X-Junk": "a" * limit}
    repeated = [("Origin", "https://a.example"), ("Origin", "https://b.example")]
    body = {"content": b"x" * (harness.state.settings.max_body_bytes + 1)}
    answers = [
        (await harness.client.post("/oauth/token", headers=junk), 431),
        (await harness.client.post("/oauth/token", headers=repeated), 400),
        (await harness.client.post("/oauth/token", **body), 413),  # type: ignore[arg-type]
    ]
    for response, status in answers:
        assert response.status_code == status, response.text
        assert set(response.json()) == {"error", "error_description"}, response.text
    ours = await harness.client.post("/auth/login", headers=junk)
    assert ours.status_code == 431 and set(ours.json()) == {"error", "message"}
    # The pages a browser navigates to answer with a page.
    pages = [
        (await harness.client.get("/oauth/authorize", headers=junk), 431),
        (await harness.client.get("/oauth/logout", headers=repeated), 400),
        (await harness.client.post("/oauth/authorize", **body), 413),  # type: ignore[arg-type]
    ]
    for response, status in pages:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("text/html"), response.text
        assert "Cannot continue" in response.text
        assert response.headers["content-security-policy"].startswith("default-src 'none'")


AUTHORIZATION_CASES = [
    ("Bearer {t}", 200),
    ("bearer {t}", 200),
    ("BEARER {t}", 200),
    ("Bearer  {t}", 200),
    ("Bearer {t} ", 200),
    ("Basic {t}", 401),
    ("Token {t}", 401),
    ("Bearer", 401),
    ("Bearer ", 401),
    ("Bearer{t}", 401),
    ("Bearer\t{t}", 401),
    ("Bearer {t} {t}", 401),
    ("Bearer {t},Bearer {t}", 401),
    ("{t}", 401),
    ("", 401),
    ("Bearer {t}=", 401),
    ('Bearer "{t}"', 401),
]


async def test_authorization_accepts_only_bearer_token(harness: Harness) -> None:
    """RFC 6750 section 2.1: `Bearer <token>`, the scheme case-insensitive; anything else 401."""
    await harness.create_user()
    token = (await harness.login())["access_token"]
    wrong = []
    for template, status in AUTHORIZATION_CASES:
        response = await harness.client.get(
            "/auth/me", headers={"Authorization": template.format(t=token)}
        )
        if response.status_code != status:
            wrong.append(f"{template!r}: {response.status_code}")
        elif status == 401 and (
            response.json()["error"] != "invalid_token"
            or not response.headers["www-authenticate"].startswith("Bearer")
        ):
            wrong.append(f"{template!r}: {response.json()} {response.headers}")
    assert not wrong, wrong


async def test_missing_authorization_gets_a_bare_challenge(harness: Harness) -> None:
    response = await harness.client.get("/auth/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="authsvc"'


async def test_header_limit_is_a_setting(settings: Any) -> None:
    app = create_app(settings.model_copy(update={"max_header_bytes": 2048}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/healthz", headers={"X-Junk": "a" * 2100})
    assert response.status_code == 431


def test_the_schema_documents_validation_as_400_and_retry_after(tmp_path: Path) -> None:
    """Request validation answers 400, never the 422 FastAPI documents by default; every
    operation that takes input documents that 400; 429 and 503 name their Retry-After."""
    app = create_app(make_settings(f"sqlite:///{tmp_path}/unused.db", tmp_path / "data"))
    schema = app.openapi()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            assert "422" not in responses, where
            if operation.get("parameters") or "requestBody" in operation:
                assert "400" in responses, where
            for status in {"429", "503"} & set(responses):
                if "Error" in str(responses[status].get("content")):  # not /readyz's Health
                    assert "Retry-After" in responses[status].get("headers", {}), where


def _depends_on(dependant: Dependant, calls: set[Any]) -> bool:
    return any(d.call in calls or _depends_on(d, calls) for d in dependant.dependencies)


def _api_routes() -> Iterator[APIRoute]:
    """Every route of every router in authsvc.api (their paths carry the routers' prefixes)."""
    for info in pkgutil.iter_modules(api.__path__):
        router = getattr(importlib.import_module(f"authsvc.api.{info.name}"), "router", None)
        if isinstance(router, APIRouter):
            yield from (route for route in router.routes if isinstance(route, APIRoute))


def test_every_browser_mode_route_documents_the_csrf_refusal(tmp_path: Path) -> None:
    """A route that can answer in browser mode checks CSRF first and refuses with 403
    (api/browser.py); its schema says so."""
    app = create_app(make_settings(f"sqlite:///{tmp_path}/unused.db", tmp_path / "data"))
    schema = app.openapi()
    checked = {browser._cookie_mode, browser._cookie_context}
    routes = [route for route in _api_routes() if _depends_on(route.dependant, checked)]
    assert {"/auth/mfa/verify", "/auth/passkeys/login/verify"} <= {r.path for r in routes}
    for route in routes:
        for method in route.methods or ():
            responses = schema["paths"][route.path][method.lower()]["responses"]
            assert "403" in responses, f"{method} {route.path}"
