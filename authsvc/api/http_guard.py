"""Response headers every answer carries, and a cap on request header size (pure ASGI).

- Security headers (OWASP Secure Headers): `X-Content-Type-Options: nosniff`,
  `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`, and on everything but the
  interactive docs a Content-Security-Policy that allows nothing (`default-src 'none';
  frame-ancestors 'none'`): authsvc serves JSON, never pages.
- `Cache-Control: no-store` and `Pragma: no-cache` on every response that did not choose its
  own caching (the JWKS does), so no response that carries a token can ever be cached
  (RFC 6749 section 5.1), whichever endpoint it comes from.
- Request headers larger than `max_header_bytes` in total get 431 before any routing; this holds
  behind any server. `authsvc serve` also cuts a header block that grows past it (plus 8 KiB)
  before it is complete (authsvc/server.py).
- A request that repeats a header we read as one value (two `Authorization` headers, two
  `Origin`s...) gets 400: which one counts would otherwise depend on who reads it (the proxy,
  the framework, a log), and a valid and an invalid credential must not add up to a valid one.

StrictJson refuses JSON bodies that different parsers could read differently: not UTF-8
(RFC 8259 section 8.1; Python's json would otherwise guess UTF-16 or UTF-32), with duplicate
member names (section 4: "the behavior ... is unpredictable"; the last one wins in Python) or
nested too deep for the parser.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authsvc.api.errors import render_unrouted
from authsvc.errors import HeadersTooLarge, InvalidRequest

CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The development-only example SPA (AUTHSVC_SPA_DIR, mounted at /spa) is a page: it may load its
# own script and call the API on its own origin, nothing else.
SPA_CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
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


# Request headers that are read as one value. Cookie is not among them: HTTP/2 may split it.
_SINGLE = frozenset(
    {
        b"authorization",
        b"content-type",
        b"host",
        b"origin",
        b"x-authsvc-csrf",
        b"x-authsvc-token-transport",
    }
)


def _invalid_request(scope: Scope, message: str) -> Response:
    return render_unrouted(scope, InvalidRequest(message))


def _repeated_header(headers: Any) -> bytes | None:
    seen: set[bytes] | None = None
    for name, _ in headers:
        if name in _SINGLE:
            if seen is None:
                seen = {name}
            elif name in seen:
                return bytes(name)
            else:
                seen.add(name)
    return None


def _csp_raw(path: str) -> tuple[bytes, bytes]:
    # The docs pages (api/docs.py) bring their own policy, which _add_raw leaves in place.
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
                headers.setdefault("Content-Security-Policy", csp)
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
                if headers["cache-control"] == "no-store":
                    headers.setdefault("Pragma", "no-cache")
            await send(message)

        raw_headers = scope.get("headers", ())
        size = sum(len(name) + len(value) + 4 for name, value in raw_headers)
        if size > self.max_header_bytes:
            response = render_unrouted(scope, HeadersTooLarge())
            await response(scope, receive, send_with_headers)
            return
        repeated = _repeated_header(raw_headers)
        if repeated is not None:
            name = repeated.decode("latin-1").title()
            refusal = _invalid_request(scope, f"The {name} header is repeated.")
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


class _DuplicateMember(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateMember
    return result


def json_body_problem(body: bytes) -> str | None:
    """Why a JSON request body is refused, or None when the route may parse it. Malformed JSON
    is refused here too, in the words of the framework's own answer: valid UTF-8 is not enough
    (UTF-16 text of ASCII characters is valid UTF-8, with NULs), so the parse that counts is this
    one, of the UTF-8 text."""
    if body.startswith(b"\xef\xbb\xbf"):
        return "The JSON body must be UTF-8 without a byte order mark."
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "The JSON body must be UTF-8."
    if "\x00" in text:
        # Never in JSON text (RFC 8259 section 7); the mark of UTF-16 or UTF-32.
        return "The JSON body must be UTF-8."
    try:
        json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateMember:
        return "The JSON body repeats a member name."
    except RecursionError:
        return "The JSON body is nested too deeply."
    except ValueError:
        return "Invalid request: malformed JSON"
    return None


def _is_json(headers: Any) -> bool:
    # The media types FastAPI parses as JSON: application/json and application/*+json.
    for name, value in headers:
        if name == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or (
                media.startswith(b"application/") and media.endswith(b"+json")
            )
    return False


class StrictJson:
    """Reads a JSON request body whole, refuses it when ambiguous (see the module docstring),
    and hands the same bytes on. Goes inside BodySizeLimit, which bounds what is read here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope.get("headers", ())):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        last: Message
        while True:
            last = await receive()
            if last["type"] != "http.request":
                break  # the client went away: the app sees the disconnect
            chunks.append(last.get("body", b""))
            if not last.get("more_body", False):
                break
        body = b"".join(chunks)
        if last["type"] == "http.request" and body:
            problem = json_body_problem(body)
            if problem is not None:
                await _invalid_request(scope, problem)(scope, receive, send)
                return
            last = {"type": "http.request", "body": body, "more_body": False}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return last
            return await receive()

        await self.app(scope, replay, send)
