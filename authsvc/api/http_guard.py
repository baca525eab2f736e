"""Response headers every answer carries, and a cap on request header size (pure ASGI).

- Security headers (OWASP Secure Headers): `X-Content-Type-Options: nosniff`,
  `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`, and on everything but the
  interactive docs a Content-Security-Policy that allows nothing (`default-src 'none';
  frame-ancestors 'none'`): authsvc serves JSON, never pages.
- `Cache-Control: no-store` and `Pragma: no-cache` on every response that did not choose its
  own caching (the JWKS does), so no response that carries a token can ever be cached
  (RFC 6749 section 5.1), whichever endpoint it comes from.
- Request headers larger than `max_header_bytes` in total get 431 before any routing. uvicorn's
  h11 parser has its own limit (`authsvc serve` sets it to the same value); this one also holds
  behind any server or parser.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authsvc.api.errors import error_response

CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The development-only example SPA (AUTHSVC_SPA_DIR, mounted at /spa) is a page: it may load its
# own script and call the API on its own origin, nothing else.
SPA_CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
_DOCS_PATHS = ("/docs", "/redoc")
_SPA_PATH = "/spa"
_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# The same, as raw ASGI header pairs, for the common path below.
_ALWAYS_RAW = [(name.lower().encode(), value.encode()) for name, value in _ALWAYS.items()]
_CSP_RAW = (b"content-security-policy", CSP.encode())
_SPA_CSP_RAW = (b"content-security-policy", SPA_CSP.encode())
_NO_STORE_RAW = (b"cache-control", b"no-store")
_PRAGMA_RAW = (b"pragma", b"no-cache")
_OURS = {name for name, _ in _ALWAYS_RAW} | {b"content-security-policy", b"pragma"}


def _add_raw(headers: list[tuple[bytes, bytes]], csp: tuple[bytes, bytes] | None) -> None:
    """Append the headers the response lacks, in one pass over the ones it has (Starlette
    responses: a list of lower-cased byte pairs). Same result as the MutableHeaders path."""
    cache_control: bytes | None = None
    present: set[bytes] = set()
    for name, value in headers:
        if name == b"cache-control":
            if cache_control is None:
                cache_control = value
        elif name in _OURS:
            present.add(name)
    if present:
        headers.extend(h for h in _ALWAYS_RAW if h[0] not in present)
        if csp is not None and csp[0] not in present:
            headers.append(csp)
    else:
        headers.extend(_ALWAYS_RAW)
        if csp is not None:
            headers.append(csp)
    if cache_control is None:
        headers.append(_NO_STORE_RAW)
        cache_control = _NO_STORE_RAW[1]
    if cache_control == b"no-store" and b"pragma" not in present:
        headers.append(_PRAGMA_RAW)


def _csp_raw(path: str) -> tuple[bytes, bytes] | None:
    if path.startswith(_DOCS_PATHS):
        return None
    spa = path == _SPA_PATH or path.startswith(_SPA_PATH + "/")
    return _SPA_CSP_RAW if spa else _CSP_RAW


def add_response_headers(headers: list[tuple[bytes, bytes]], path: str) -> None:
    """Append to a response's raw headers (lower-cased byte pairs) what HttpGuard appends to
    the answer for `path`: for answers made without passing through it (api/jwks_edge.py)."""
    _add_raw(headers, _csp_raw(path))


class HttpGuard:
    def __init__(self, app: ASGIApp, max_header_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        csp_raw = _csp_raw(path)
        docs = csp_raw is None
        csp = SPA_CSP if csp_raw is _SPA_CSP_RAW else CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = message.get("headers")
                if type(raw) is list:
                    _add_raw(raw, csp_raw)
                    await send(message)
                    return
                headers = MutableHeaders(scope=message)
                for name, value in _ALWAYS.items():
                    headers.setdefault(name, value)
                if not docs:
                    headers.setdefault("Content-Security-Policy", csp)
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
                if headers["cache-control"] == "no-store":
                    headers.setdefault("Pragma", "no-cache")
            await send(message)

        size = sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))
        if size > self.max_header_bytes:
            response = error_response(
                431, "headers_too_large", "The request headers are too large."
            )
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
