"""Per-request observability (pure ASGI, outermost): request id, one log line, metrics."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authsvc.observability.metrics import Metrics

log = logging.getLogger("authsvc.access")

REQUEST_ID_HEADER: Final = "x-request-id"
# The id of the request being handled, for every log line written while handling it.
current_request_id: ContextVar[str | None] = ContextVar("authsvc_request_id", default=None)
# A caller's request id is kept when it is short and plain (it ends up in logs); else ours.
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return request_id_from(value)
    return request_id_from(None)


def request_id_from(given: bytes | None) -> str:
    """The request id for a request whose first X-Request-ID header is `given`."""
    if given is not None:
        candidate = given.decode("latin-1")
        if _REQUEST_ID.fullmatch(candidate):
            return candidate
    # 128 random bits as 32 hex digits (like uuid4().hex, at a quarter of its cost).
    return os.urandom(16).hex()


def record_request(
    metrics: Metrics,
    access_log: bool,
    scope: Scope,
    route: str,
    status: int,
    elapsed: float,
    request_id: str,
) -> None:
    """Count one answered request and write its access-log line (when enabled)."""
    method = str(scope.get("method", ""))
    metrics.request(route, method, status, elapsed)
    if access_log:
        path = str(scope.get("path", ""))[:256]
        client = scope.get("client")
        log.info(
            "%s %s %d %.1fms",
            method,
            path,
            status,
            elapsed * 1000,
            extra={
                "request_id": request_id,
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "client": client[0] if client else None,
            },
        )


class RequestObserver:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        access_log: bool = True,
        link: Callable[[str], None] | None = None,
    ) -> None:
        """`link`: called with each request's id (tracing puts it on the request's span)."""
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.link = link

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        token = current_request_id.set(request_id)
        if self.link is not None:
            self.link(request_id)
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = message.get("headers")
                if type(headers) is list:
                    # Starlette's responses hand over a list: append in place (the cheap path).
                    headers.append((b"x-request-id", request_id.encode("latin-1")))
                else:
                    MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            current_request_id.reset(token)
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            # The route template, not the path: bounded label values whatever clients send.
            template = getattr(route, "path", None) or "<unmatched>"
            record_request(
                self.metrics, self.access_log, scope, template, status, elapsed, request_id
            )
