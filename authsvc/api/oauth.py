"""/oauth: the OAuth 2 token, revocation and introspection endpoints (form-encoded, RFC shapes).

A thin adapter over the same services as the JSON API. Errors here are rendered as RFC 6749
section 5.2 bodies (`{"error", "error_description"}`); the JSON API's own errors raised by the
shared services are translated in exactly one place, OAuthRoute below, which the app's error
handlers (api/errors.py) call.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from urllib.parse import unquote_plus

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from authsvc.api.deps import Context, State, TokenContext, WriteDB
from authsvc.api.errors import ShapedErrorRoute, error_responses, render_oauth
from authsvc.api.oauth_params import oauth_form
from authsvc.errors import (
    NO_STORE,
    AuthError,
    InvalidClient,
    InvalidCredentials,
    InvalidGrant,
    InvalidRefreshToken,
    InvalidRequest,
    InvalidUsername,
    OAuthError,
    OAuthInvalidRequest,
    RefreshTokenReused,
    ServiceUnavailable,
    TemporarilyUnavailable,
)
from authsvc.services.clients import ClientCredentials


def as_oauth(exc: AuthError) -> AuthError:
    """The RFC 6749 section 5.2 error for an error of the shared services."""
    if isinstance(exc, OAuthError):
        return exc
    if isinstance(exc, InvalidCredentials | InvalidUsername | InvalidRefreshToken):
        return InvalidGrant()
    if isinstance(exc, RefreshTokenReused):
        return InvalidGrant(exc.message)
    if isinstance(exc, InvalidRequest):
        return OAuthInvalidRequest(exc.message)
    if isinstance(exc, ServiceUnavailable):
        return TemporarilyUnavailable(headers=exc.headers)
    return exc  # rate_limited and the like keep their code and status, in the RFC shape


class OAuthRoute(ShapedErrorRoute):
    """Every error of an /oauth route in the RFC shape (drawn by the app's error handlers,
    after the request's write scope has rolled back, or kept what must survive)."""

    @staticmethod
    def render_error(exc: AuthError) -> Response:
        return render_oauth(as_oauth(exc))


router = APIRouter(prefix="/oauth", tags=["oauth"], route_class=OAuthRoute)


# Parsed per endpoint in api/oauth_params.py: unknown parameters ignored, known ones once.
Form = Annotated[dict[str, str], Depends(oauth_form)]


async def _credentials(request: Request, form: Form) -> ClientCredentials:
    """RFC 6749 section 2.3.1: HTTP Basic (client_secret_basic) or body parameters
    (client_secret_post, or a public client's bare client_id); never both.

    `async def` so FastAPI does not run it in the thread pool (see api/deps.py)."""
    header = request.headers.get("authorization")
    if header is None:
        return ClientCredentials(form.get("client_id"), form.get("client_secret"), basic=False)
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("Client authentication must use the Basic scheme.", basic=True)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidClient(basic=True) from exc
    raw_id, sep, raw_secret = decoded.partition(":")
    if not sep:
        raise InvalidClient(basic=True)
    # Section 2.3.1: both parts are form-urlencoded before being joined.
    client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
    if "client_secret" in form or form.get("client_id", client_id) != client_id:
        raise OAuthInvalidRequest("Use one client authentication method only.")
    return ClientCredentials(client_id, secret, basic=True)


Credentials = Annotated[ClientCredentials, Depends(_credentials)]


def _form_body(required: list[str], optional: list[str]) -> dict[str, Any]:
    """The form-encoded request body, for the OpenAPI document (parsed in api/oauth_params.py)."""
    fields = {name: {"type": "string"} for name in [*required, *optional]}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "properties": fields, "required": required}
                }
            },
        }
    }


_OAUTH_ERRORS = error_responses(400, 401, 403, 413, 429, 503, oauth=True)
_CLIENT_FIELDS = ["client_id", "client_secret"]
# RFC 7009 section 2.1 and RFC 7662 section 2.1 take the same parameters.
_TOKEN_FORM = _form_body(["token"], ["token_type_hint", *_CLIENT_FIELDS])


def _json(body: dict[str, Any]) -> JSONResponse:
    # RFC 6749 section 5.1 / RFC 7662 section 2.2: never cached.
    return JSONResponse(body, headers=NO_STORE)


@router.post(
    "/token",
    responses=_OAUTH_ERRORS,
    openapi_extra=_form_body(
        ["grant_type"],
        [
            *("username", "password", "refresh_token", "scope"),
            *("code", "redirect_uri", "code_verifier"),
            *_CLIENT_FIELDS,
        ],
    ),
)
async def token(
    state: State, db: WriteDB, ctx: TokenContext, form: Form, creds: Credentials
) -> JSONResponse:
    """RFC 6749 section 4.1.3 (authorization_code), 4.3 (password), 4.4 (client_credentials)
    and 6 (refresh_token); with a DPoP proof, a DPoP-bound access token (RFC 9449 section 5)."""
    pair = await state.oauth.token(db, creds, form, ctx)
    body: dict[str, Any] = {
        "access_token": pair.access_token,
        "token_type": pair.token_type,
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token,
        "scope": pair.scope,
    }
    if not pair.has_refresh_token:
        del body["refresh_token"]  # client credentials: none (RFC 6749 section 4.4.3)
    if pair.id_token is not None:
        body["id_token"] = pair.id_token  # OpenID Connect Core section 3.1.3.3
    return _json(body)


@router.post(
    "/revoke",
    responses=_OAUTH_ERRORS,
    openapi_extra=_TOKEN_FORM,
)
async def revoke(
    state: State, db: WriteDB, ctx: Context, form: Form, creds: Credentials
) -> Response:
    """RFC 7009: 200 whether or not the token was known."""
    await state.oauth.revoke(db, creds, form, ctx)
    return Response(status_code=200, headers=NO_STORE)


@router.post(
    "/introspect",
    responses=_OAUTH_ERRORS,
    openapi_extra=_TOKEN_FORM,
)
async def introspect(
    state: State, db: WriteDB, ctx: Context, form: Form, creds: Credentials
) -> JSONResponse:
    """RFC 7662, for confidential clients (resource servers)."""
    return _json(await state.oauth.introspect(db, creds, form, ctx))
