"""GET and HEAD /.well-known/jwks.json answered at the outer edge of the stack (pure ASGI).

The JWKS is the most requested endpoint and its answer is the same bytes for everyone until the
key ring changes. Through the whole stack (request observer, header guard, body limit,
Starlette's exception layer, routing, FastAPI's endpoint call) it cost ~1.3x a framework hello
world; here a plain request costs a few microseconds plus what every answer needs: a request
id, the metrics and the access-log line (`record_request`, as RequestObserver does).

The answer is the route's own: its headers are rendered once per document from
`well_known.jwks_response` and `http_guard.add_response_headers` (and CORS's `Vary: Origin`
when CORS is on), so they are exactly what the stack would send; only X-Request-ID is added
per request. Everything that is not plain goes down the stack unchanged:
- a request with an Origin header (CORS answers it), or with a body (Content-Length or
  Transfer-Encoding: the body limit applies), or with headers over the 431 cap;
- any request while the key service's document needs a reload or a re-render
  (`KeyService.cached_jwks` is None): the route does that work, the next request is served here.
"""

from __future__ import annotations

import time
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from authsvc.api.http_guard import add_response_headers
from authsvc.api.well_known import JWKS_PATH, jwks_response
from authsvc.observability.requests import record_request, request_id_from
from authsvc.state import AppState

_METHODS: Final = ("GET", "HEAD")
# Request headers that make a JWKS request something only the full stack answers correctly.
_NOT_PLAIN: Final = frozenset({b"origin", b"content-length", b"transfer-encoding"})


class JWKSEdge:
    def __init__(self, app: ASGIApp, state: AppState, cors: bool) -> None:
        self.app = app
        self.keys = state.keys
        self.clock = state.clock
        self.metrics = state.metrics
        self.max_age = state.settings.jwks_max_age
        self.max_header_bytes = state.settings.max_header_bytes
        self.access_log = state.settings.access_log
        # Without an Origin, CORSMiddleware adds only `Vary: Origin` (after the route's headers,
        # before HttpGuard's).
        self.cors = cors
        self._rendered: tuple[bytes, list[tuple[bytes, bytes]]] | None = None

    def _headers_for(self, body: bytes) -> list[tuple[bytes, bytes]]:
        rendered = self._rendered
        if rendered is None or rendered[0] is not body:
            headers = list(jwks_response(body, self.max_age).raw_headers)
            if self.cors:
                headers.append((b"vary", b"Origin"))
            add_response_headers(headers, JWKS_PATH)
            rendered = self._rendered = (body, headers)
        return rendered[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != JWKS_PATH
            or scope["method"] not in _METHODS
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given: bytes | None = None
        size = 0
        for name, value in scope["headers"]:
            # Counted as HttpGuard counts them for its 431.
            size += len(name) + len(value) + 4
            if name in _NOT_PLAIN:
                await self.app(scope, receive, send)
                return
            if name == b"x-request-id" and given is None:
                given = value
        body = self.keys.cached_jwks(self.clock.now())
        if body is None or size > self.max_header_bytes:
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(given)
        headers = [*self._headers_for(body), (b"x-request-id", request_id.encode("latin-1"))]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            # RFC 9110 section 9.3.2: HEAD gets GET's headers (Content-Length included), no body.
            await send(
                {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
            )
        finally:
            elapsed = time.perf_counter() - started
            record_request(
                self.metrics, self.access_log, scope, JWKS_PATH, 200, elapsed, request_id
            )
