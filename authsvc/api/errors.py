"""Errors as HTTP responses: the one place domain errors (authsvc/errors.py), request
validation, routing and database failures become JSON bodies, the app's handlers for them, and
how routes document them in the OpenAPI document (error_responses)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from authsvc.api.pages import error_page
from authsvc.api.schemas import ErrorResponse, OAuthErrorBody
from authsvc.errors import (
    NO_STORE,
    AuthError,
    OAuthError,
    OAuthInvalidRequest,
    ServiceUnavailable,
)
from authsvc.security.secrets import UnreadableSecret
from authsvc.store.errors import TRANSIENT_SQLSTATE

log = logging.getLogger("authsvc.errors")

_HTTP_CODES = {
    400: "invalid_request",
    401: "invalid_token",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    }
}
# What each status means on any route; the body's `error` code says which case it is.
_MEANINGS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("The request is malformed or refused.", {}),
    401: ("The credentials (token, password, link or client) are missing or not accepted.", {}),
    403: ("The caller is known but not allowed to do this.", {}),
    404: ("No such resource, or the feature is switched off on this server.", {}),
    409: ("The request conflicts with what exists.", {}),
    413: ("The request body is over the size limit (AUTHSVC_MAX_BODY_BYTES).", {}),
    429: ("Too many requests.", _RETRY_AFTER),
    503: ("Temporarily unavailable (database, rate limiter or signing keys).", _RETRY_AFTER),
}


def error_responses(
    *statuses: int,
    oauth: bool = False,
    models: Mapping[int, Any] | None = None,
    descriptions: Mapping[int, str] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses=` of a route, for the error statuses it can answer: each with
    the body the handlers below render for that route (ours, or RFC 6749 section 5.2 on
    /oauth) unless `models` names another, and what it means here."""
    default = OAuthErrorBody if oauth else ErrorResponse
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        meaning, headers = _MEANINGS[status]
        entry: dict[str, Any] = {
            "model": (models or {}).get(status, default),
            "description": (descriptions or {}).get(status, meaning),
        }
        if headers:
            entry["headers"] = headers
        documented[status] = entry
    return documented


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    merged = {**NO_STORE, **(headers or {})}
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=merged)


def render(exc: AuthError) -> JSONResponse:
    if isinstance(exc, OAuthError):
        return render_oauth(exc)
    if exc.extra:
        return JSONResponse(
            {"error": exc.code, "message": exc.message, **exc.extra},
            status_code=exc.status,
            headers={**NO_STORE, **exc.headers},
        )
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def render_oauth(exc: AuthError) -> JSONResponse:
    """RFC 6749 section 5.2 body: `error` and `error_description`, never cached."""
    return JSONResponse(
        {"error": exc.code, "error_description": exc.message},
        status_code=exc.status,
        headers={**NO_STORE, **exc.headers},
    )


# The endpoints a browser navigates to: their errors are pages, for the person looking at them.
BROWSER_PAGES = frozenset({"/oauth/authorize", "/oauth/logout"})


def render_unrouted(scope: Scope, exc: AuthError) -> Response:
    """An error found before routing (the body limit, the header and JSON guards), answered
    as the endpoint answers its own: a page on the browser's pages, the RFC 6749 section 5.2
    shape on the other /oauth endpoints, ours elsewhere."""
    path = str(scope.get("path", ""))
    if path in BROWSER_PAGES:
        return error_page(exc.message, exc.status, exc.headers)
    if path.startswith("/oauth/"):
        return render_oauth(exc)
    return render(exc)


class ShapedErrorRoute(APIRoute):
    """A route whose errors have a shape of their own (RFC 6749 section 5.2 bodies on /oauth,
    pages on /oauth/logout): `render_error` draws them, called by the app's handlers below.

    Not by the route class catching them: FastAPI runs the route handler inside the exit stack
    of the request's dependencies, so an error caught there never reaches the request's write
    scope (api/deps.py), which would commit the failed request and skip its failure writes.
    Here the error has passed through the scope, rolled back or kept as it must, first."""

    @staticmethod
    def render_error(exc: AuthError) -> Response:
        raise NotImplementedError


def _shaped_route(request: Request) -> ShapedErrorRoute | None:
    route = request.scope.get("route")
    return route if isinstance(route, ShapedErrorRoute) else None


# What the database being away or slow may raise; database_outage tells which of these are.
# OSError: asyncpg connecting to an unreachable server (TimeoutError is one).
DATABASE_ERRORS: tuple[type[Exception], ...] = (DBAPIError, PoolTimeoutError, OSError)


def database_outage(exc: BaseException) -> bool:
    """Whether `exc` is the database being away or slow (503, retry later), not our bug (500).

    asyncpg reports statement and lock timeouts, deadlocks and shutdowns as plain DBAPIErrors,
    told apart by their SQLSTATE; it raises plain OSError / TimeoutError while connecting to an
    unreachable server."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError | OSError):
        return True  # OSError includes TimeoutError
    if isinstance(exc, DBAPIError):
        sqlstate = str(getattr(getattr(exc, "orig", None), "sqlstate", None) or "")
        return sqlstate.startswith(TRANSIENT_SQLSTATE)
    return False


def _render_for(request: Request, exc: AuthError) -> Response:
    route = _shaped_route(request)
    return render(exc) if route is None else route.render_error(exc)


# pydantic's error types for a body that is not a JSON object (a form, a string, nothing).
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "model_type", "dict_type", "missing"})


def _validation_message(exc: RequestValidationError, content_type: str) -> str:
    # Name the fields at fault, never echo their values: they may be passwords or tokens.
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        kind = str(err.get("type", "invalid"))
        if kind == "json_invalid":
            parts.append("malformed JSON")
        elif tuple(err.get("loc", ())) == ("body",) and kind in _NOT_AN_OBJECT:
            json_sent = content_type.split(";", 1)[0].strip().lower() == "application/json"
            parts.append(
                "the body must be a JSON object"
                + ("" if json_sent else ", sent with Content-Type: application/json")
            )
        else:
            parts.append(f"{loc}: {kind}")
    return "Invalid request: " + "; ".join(parts)


def _document_validation_as_400(app: FastAPI) -> None:
    """Request validation answers 400 (below), never the 422 FastAPI documents for every route
    with parameters: drop that from the OpenAPI document, with the schemas only it used. Each
    route documents its 400 through error_responses."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = generate()
        if fresh:
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    _document_validation_as_400(app)

    async def on_auth_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AuthError)
        return _render_for(request, exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        route = _shaped_route(request)
        if route is not None:
            # Their bodies name no fields: RFC 6749 section 5.2 has no place for them.
            return route.render_error(OAuthInvalidRequest())
        return error_response(
            400,
            "invalid_request",
            _validation_message(exc, request.headers.get("content-type", "")),
        )

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        return error_response(exc.status_code, code, message, dict(exc.headers or {}))

    async def on_database(request: Request, exc: Exception) -> Response:
        if not database_outage(exc):
            return await on_unexpected(request, exc)
        log.warning("database unavailable: %s", type(exc).__name__)
        # A shaped route answers in its own terms: temporarily_unavailable on /oauth
        # (RFC 6749 section 4.1.2.1 defines it; the token endpoint sends it with the 503).
        return _render_for(request, ServiceUnavailable())

    async def on_unreadable(request: Request, exc: Exception) -> Response:
        # Another process wrote it under a KEK this one lacks: a KEK rotation out of order
        # (`keys rewrap` before every process had the new KEK). The operator's to fix.
        log.error("%s; this process needs that key-encryption key", exc)
        return _render_for(request, ServiceUnavailable())

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return _render_for(request, AuthError())

    app.add_exception_handler(AuthError, on_auth_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    for kind in DATABASE_ERRORS:
        app.add_exception_handler(kind, on_database)
    app.add_exception_handler(UnreadableSecret, on_unreadable)
    app.add_exception_handler(Exception, on_unexpected)
