"""The interactive API docs (/docs: Swagger UI, /redoc: ReDoc), each under its own
Content-Security-Policy.

The pages are FastAPI's, with every asset (scripts, style sheet, icon) from one CDN origin and
ReDoc without Google Fonts. The policy allows exactly that origin, the page's one inline script
by its hash, and the OpenAPI document on our own origin; nothing can frame the pages. Off in
production unless AUTHSVC_API_DOCS_ENABLED says otherwise (config.Settings.docs_enabled).
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.requests import Request

CDN = "https://cdn.jsdelivr.net"
SWAGGER_JS = f"{CDN}/npm/swagger-ui-dist@5/swagger-ui-bundle.js"
SWAGGER_CSS = f"{CDN}/npm/swagger-ui-dist@5/swagger-ui.css"
FAVICON = f"{CDN}/npm/swagger-ui-dist@5/favicon-32x32.png"
REDOC_JS = f"{CDN}/npm/redoc@2/bundles/redoc.standalone.js"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_COMMON = "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def _script_hashes(html: str) -> str:
    """CSP source expressions for the page's inline scripts (CSP 3 section 8.4: the hash of
    the element's text, exactly as written)."""
    sources = []
    for body in _INLINE_SCRIPT.findall(html):
        digest = hashlib.sha256(body.encode()).digest()
        sources.append(f"'sha256-{base64.b64encode(digest).decode()}'")
    return " ".join(sources)


def _text(response: HTMLResponse) -> str:
    return bytes(response.body).decode()


def _page(html: str, csp: str) -> HTMLResponse:
    return HTMLResponse(html, headers={"Content-Security-Policy": csp})


def install_docs(app: FastAPI, openapi_url: str) -> None:
    title = f"{app.title} - docs"
    swagger = _text(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            swagger_js_url=SWAGGER_JS,
            swagger_css_url=SWAGGER_CSS,
            swagger_favicon_url=FAVICON,
            oauth2_redirect_url=None,
        )
    )
    # Swagger UI sets style attributes from script, hence 'unsafe-inline' for styles only;
    # "Try it out" calls the API on this origin (connect-src 'self').
    swagger_csp = (
        f"default-src 'none'; script-src {CDN} {_script_hashes(swagger)}; "
        f"style-src {CDN} 'unsafe-inline'; img-src {CDN} data:; connect-src 'self'; {_COMMON}"
    )
    redoc = _text(
        get_redoc_html(
            openapi_url=openapi_url,
            title=title,
            redoc_js_url=REDOC_JS,
            redoc_favicon_url=FAVICON,
            with_google_fonts=False,
        )
    )
    # ReDoc injects its styles (styled-components) and runs its search index in a blob: worker.
    redoc_csp = (
        f"default-src 'none'; script-src {CDN}; style-src 'unsafe-inline'; "
        f"img-src {CDN} data:; connect-src 'self'; worker-src blob:; {_COMMON}"
    )

    async def swagger_page(_: Request) -> HTMLResponse:
        return _page(swagger, swagger_csp)

    async def redoc_page(_: Request) -> HTMLResponse:
        return _page(redoc, redoc_csp)

    app.add_route("/docs", swagger_page, include_in_schema=False)
    app.add_route("/redoc", redoc_page, include_in_schema=False)
