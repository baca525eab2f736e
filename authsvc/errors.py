"""Typed domain errors and the one place they become HTTP responses.

Every error has a stable snake_case `code` that clients may branch on and a status. Messages are
for humans and never say which of several secret checks failed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from authsvc.store.errors import TRANSIENT_SQLSTATE

log = logging.getLogger("authsvc.errors")

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# A write that records the failure itself (an audit row for a failed login), given the request's
# session after everything else the request wrote was rolled back.
FailureWrite = Callable[[Any], Awaitable[None]]


class AuthError(Exception):
    code: ClassVar[str] = "server_error"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "The server could not handle the request."
    # A security write made before the error (family revocation on reuse) must survive the
    # failed request: the request scope commits instead of rolling back when this is set.
    persist_writes: ClassVar[bool] = False

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None):
        self.message = message or self.default_message
        self.headers = dict(headers or {})
        self.failure_writes: list[FailureWrite] = []
        super().__init__(self.message)


class InvalidRequest(AuthError):
    code = "invalid_request"
    status = 400
    default_message = "The request is malformed."


class InvalidCredentials(AuthError):
    code = "invalid_credentials"
    status = 401
    default_message = "Invalid username or password."


class InvalidRefreshToken(AuthError):
    code = "invalid_refresh_token"
    status = 401
    default_message = "The refresh token is invalid, expired or revoked."


class RefreshTokenReused(AuthError):
    code = "refresh_token_reused"
    status = 401
    default_message = "The refresh token was already used; the session has been revoked."
    persist_writes = True


class InvalidToken(AuthError):
    """RFC 6750 section 3.1: a bad bearer token; always answered with WWW-Authenticate."""

    code = "invalid_token"
    status = 401
    default_message = "The access token is invalid, expired or revoked."

    def __init__(self, message: str | None = None, *, missing: bool = False):
        # With no credentials at all, RFC 6750 section 3.1 says to send no error code.
        challenge = 'Bearer realm="authsvc"' if missing else 'Bearer error="invalid_token"'
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class InsufficientScope(AuthError):
    code = "insufficient_scope"
    status = 403
    default_message = "The access token does not grant this."


class NotFound(AuthError):
    code = "not_found"
    status = 404
    default_message = "Not found."


class Conflict(AuthError):
    code = "conflict"
    status = 409
    default_message = "The resource already exists."


class UserExists(Conflict):
    code = "user_exists"
    default_message = "A user with that name already exists."


class PasswordPolicyError(AuthError):
    code = "password_policy"
    status = 400
    default_message = "The password does not meet the policy."


class InvalidUsername(AuthError):
    code = "invalid_username"
    status = 400
    default_message = "The username is not allowed."


class PayloadTooLarge(AuthError):
    code = "payload_too_large"
    status = 413
    default_message = "The request body is too large."


class RateLimited(AuthError):
    code = "rate_limited"
    status = 429
    default_message = "Too many requests; retry later."

    def __init__(self, retry_after: int, message: str | None = None):
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class ServiceUnavailable(AuthError):
    code = "service_unavailable"
    status = 503
    default_message = "The service is temporarily unavailable; retry later."

    def __init__(self, message: str | None = None, retry_after: int = 2):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class CSRFRejected(AuthError):
    """A cookie-carrying request without an allowed Origin and the X-Authsvc-CSRF header."""

    code = "csrf_rejected"
    status = 403
    default_message = "Cross-site request refused."


# -- OAuth 2 (RFC 6749 section 5.2): the /oauth endpoints answer {"error", "error_description"}.


class OAuthError(AuthError):
    """An RFC 6749 section 5.2 error; `code` is the RFC's `error` value."""

    code = "invalid_request"
    status = 400
    default_message = "The request is invalid."


class OAuthInvalidRequest(OAuthError):
    code = "invalid_request"


class InvalidClient(OAuthError):
    """RFC 6749 section 5.2: 401, with a Basic challenge when the client used that header."""

    code = "invalid_client"
    status = 401
    default_message = "Client authentication failed."

    def __init__(self, message: str | None = None, *, basic: bool = False):
        headers = {"WWW-Authenticate": 'Basic realm="authsvc"'} if basic else None
        super().__init__(message, headers=headers)


class InvalidGrant(OAuthError):
    code = "invalid_grant"
    default_message = "The grant is invalid, expired, revoked or was issued to another client."


class UnauthorizedClient(OAuthError):
    code = "unauthorized_client"
    default_message = "The client may not use this grant type."


class UnsupportedGrantType(OAuthError):
    code = "unsupported_grant_type"
    default_message = "The grant type is not supported."


class InvalidScope(OAuthError):
    code = "invalid_scope"
    default_message = "The requested scope is invalid or exceeds what was granted."


class TemporarilyUnavailable(OAuthError):
    code = "temporarily_unavailable"
    status = 503
    default_message = "The service is temporarily unavailable; retry later."


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


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    merged = {**NO_STORE, **(headers or {})}
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=merged)


def render(exc: AuthError) -> JSONResponse:
    if isinstance(exc, OAuthError):
        return render_oauth(exc)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def render_oauth(exc: AuthError) -> JSONResponse:
    """RFC 6749 section 5.2 body: `error` and `error_description`, never cached."""
    return JSONResponse(
        {"error": exc.code, "error_description": exc.message},
        status_code=exc.status,
        headers={**NO_STORE, **exc.headers},
    )


def _validation_message(exc: RequestValidationError) -> str:
    # Name the fields at fault, never echo their values: they may be passwords or tokens.
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        kind = str(err.get("type", "invalid"))
        parts.append("malformed JSON" if kind == "json_invalid" else f"{loc}: {kind}")
    return "Invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    async def on_auth_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AuthError)
        return render(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, "invalid_request", _validation_message(exc))

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        return error_response(exc.status_code, code, message, dict(exc.headers or {}))

    async def on_database(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc).__name__)
        return render(ServiceUnavailable())

    async def on_dbapi(request: Request, exc: Exception) -> JSONResponse:
        # asyncpg reports statement and lock timeouts, deadlocks and shutdowns as plain
        # DBAPIErrors; they are the database being slow or away (503), not our bug (500).
        sqlstate = str(getattr(getattr(exc, "orig", None), "sqlstate", None) or "")
        if sqlstate.startswith(TRANSIENT_SQLSTATE):
            return await on_database(request, exc)
        return await on_unexpected(request, exc)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return render(AuthError())

    app.add_exception_handler(AuthError, on_auth_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(OperationalError, on_database)
    app.add_exception_handler(PoolTimeoutError, on_database)
    app.add_exception_handler(InterfaceError, on_database)
    app.add_exception_handler(DBAPIError, on_dbapi)
    # asyncpg raises plain OSError / TimeoutError while connecting to an unreachable server.
    app.add_exception_handler(OSError, on_database)
    app.add_exception_handler(TimeoutError, on_database)
    app.add_exception_handler(Exception, on_unexpected)
