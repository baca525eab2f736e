"""GET/POST /oauth/authorize: the authorization endpoint and its hosted login and consent
pages (RFC 6749 section 4.1, RFC 7636, RFC 9207, OpenID Connect Core section 3.1.2).

HTTP only: parameters, cookies, the CSRF check, pages and redirects. The rules are
services/authorize.py's. Errors before the redirect URI is known are pages; after, redirects
carrying `error`, `state` and `iss`. A redirect that answers a POST is a 303 (RFC 9700 section
4.12: a 307 would make the browser post the password to the client).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from authsvc.api.deps import Context, State, WriteDB, write_scope
from authsvc.api.errors import DATABASE_ERRORS, database_outage, error_responses
from authsvc.api.oauth_params import FORM_TYPE, MAX_FIELDS
from authsvc.api.pages import (
    PASSKEY_SCRIPT,
    PasskeyStep,
    consent_page,
    error_page,
    login_page,
    mfa_page,
    page_headers,
)
from authsvc.config import Settings
from authsvc.errors import (
    NO_STORE,
    CSRFRejected,
    InvalidAuthorizationTarget,
    InvalidCredentials,
    InvalidMfaCode,
    InvalidMfaToken,
    OAuthError,
    RateLimited,
    ServiceUnavailable,
    TemporarilyUnavailable,
)
from authsvc.services.authorize import (
    AUTHORIZE_PARAMS,
    AuthorizationParams,
    AuthorizationRequest,
    Outcome,
    Target,
)
from authsvc.services.mfa import Factor
from authsvc.state import AppState

log = logging.getLogger("authsvc.errors")

router = APIRouter(prefix="/oauth", tags=["oauth"])

_FORM_FIELDS = AUTHORIZE_PARAMS | {
    "csrf_token",
    "action",
    "username",
    "password",
    "mfa_token",
    "code",
    "recovery_code",
    "credential",
}
_FAILED = "Invalid username or password."  # the JSON API's InvalidCredentials message
_THROTTLED = "Too many sign-in attempts. Wait a moment and try again."
_EXPIRED = "This sign-in form has expired or was not sent from this site. Go back and try again."
_BAD_CODE = "That code is not valid. Try the current code from your app."
_CODE_MISSING = "Enter the code from your authenticator app, or a recovery code."
_MFA_EXPIRED = "Your sign-in has expired or had too many wrong codes. Sign in again."
_MFA_THROTTLED = "Too many wrong codes. Wait a while and try again."
_UNAVAILABLE = "Sign-in is unavailable for a moment. Try again shortly."
_SCRIPT_PATH = "/oauth/authorize/passkey.js"
_OPTIONS_PATH = "/oauth/authorize/passkey/options"
# The script's URL carries its content hash (pages.py), so a copy may be kept a day.
_SCRIPT_CACHE = "public, max-age=86400"


def _secure(settings: Settings) -> bool:
    """Secure cookies (and the __Host- prefix) unless the issuer is plain http, which Settings
    allows only on loopback addresses in production."""
    return settings.issuer.startswith("https://")


def _cookie(settings: Settings, name: str) -> str:
    return f"__Host-{name}" if _secure(settings) else name


def login_cookie(settings: Settings) -> str:
    return _cookie(settings, "authsvc_login")


def clear_login_cookie(response: Response, settings: Settings) -> Response:
    response.delete_cookie(
        login_cookie(settings), path="/", secure=_secure(settings), httponly=True, samesite="lax"
    )
    return response


def csrf_cookie(settings: Settings) -> str:
    return _cookie(settings, "authsvc_csrf")


def _parse(raw: str) -> AuthorizationParams | None:
    """Known non-empty parameters and the names repeated; None if unparseable."""
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    values: dict[str, str] = {}
    repeated: set[str] = set()
    for name, value in pairs:
        if name not in _FORM_FIELDS:
            continue
        if name in values:
            repeated.add(name)
        values[name] = value
    return AuthorizationParams({k: v for k, v in values.items() if v != ""}, frozenset(repeated))


def _redirect_to(
    target: Target, settings: Settings, fields: dict[str, str], post: bool
) -> Response:
    """The client's redirect URI with `fields`, `state` and `iss` (RFC 9207) added to its query
    (section 3.1.2: a registered query component is kept)."""
    if target.state is not None:
        fields["state"] = target.state
    fields["iss"] = settings.issuer
    parts = urlsplit(target.redirect_uri)
    extra = urlencode(fields)
    query = f"{parts.query}&{extra}" if parts.query else extra
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache", "Referrer-Policy": "no-referrer"}
    return RedirectResponse(
        urlunsplit(parts._replace(query=query)), status_code=303 if post else 302, headers=headers
    )


def _error_redirect(target: Target, settings: Settings, exc: OAuthError, post: bool) -> Response:
    return _redirect_to(
        target, settings, {"error": exc.code, "error_description": exc.message}, post
    )


def _unavailable(
    exc: BaseException, target: Target | None, settings: Settings, post: bool
) -> Response:
    """The database is away or slow. RFC 6749 section 4.1.2.1 has temporarily_unavailable
    because a redirect cannot carry a 503: the client hears it at its redirect URI. Until the
    client and its redirect URI are read from the database there is nowhere safe to send the
    user, so they get a 503 page."""
    log.warning("database unavailable: %s", type(exc).__name__)
    if target is None:
        busy = ServiceUnavailable()
        return error_page(_UNAVAILABLE, busy.status, busy.headers)
    return _error_redirect(target, settings, TemporarilyUnavailable(), post)


async def _read_target(state: AppState, params: AuthorizationParams) -> Target:
    # In a read-only transaction: no write lock is held while the password is hashed.
    async with state.database.read() as reader:
        return await state.authorize.target(reader, params)


class _Page:
    """What a page needs from the request: the form action, the CSRF cookie and token."""

    def __init__(self, request: Request, state: AppState) -> None:
        self.settings = state.settings
        self.state = state
        self.action = urlsplit(self.settings.issuer).path + "/oauth/authorize"
        self.passkey = PasskeyStep(
            self.settings.issuer + _SCRIPT_PATH, self.settings.issuer + _OPTIONS_PATH
        )
        existing = request.cookies.get(csrf_cookie(self.settings))
        self.new_csrf = existing is None or len(existing) > 64
        self.csrf = state.csrf.new_cookie() if self.new_csrf else str(existing)
        self.login = request.cookies.get(login_cookie(self.settings))

    @property
    def token(self) -> str:
        return self.state.csrf.form_token(self.csrf)

    def finish(self, response: Response, outcome: Outcome | None = None) -> Response:
        secure = _secure(self.settings)
        if self.new_csrf:
            response.set_cookie(
                csrf_cookie(self.settings),
                self.csrf,
                path="/",
                secure=secure,
                httponly=True,
                samesite="lax",
            )
        if outcome is not None and outcome.cookie is not None:
            value, max_age = outcome.cookie
            # Lax: the client's top-level navigation to this endpoint carries it; a cross-site
            # POST or frame does not.
            response.set_cookie(
                login_cookie(self.settings),
                value,
                max_age=max_age,
                path="/",
                secure=secure,
                httponly=True,
                samesite="lax",
            )
        return response

    def login_form(
        self,
        request: AuthorizationRequest,
        *,
        username: str = "",
        error: str | None = None,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return self.finish(
            login_page(
                action=self.action,
                params=request.params,
                csrf_token=self.token,
                client_name=request.target.client.name,
                redirect_uri=request.target.redirect_uri,
                username=username or request.params.get("login_hint", ""),
                error=error,
                status=status,
                headers=headers,
            )
        )

    def mfa_form(
        self,
        request: AuthorizationRequest,
        mfa_token: str,
        passkey: bool,
        *,
        error: str | None = None,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return self.finish(
            mfa_page(
                action=self.action,
                params=request.params,
                csrf_token=self.token,
                mfa_token=mfa_token,
                client_name=request.target.client.name,
                redirect_uri=request.target.redirect_uri,
                error=error,
                status=status,
                headers=headers,
                passkey=self.passkey if passkey else None,
            )
        )

    def render(self, request: AuthorizationRequest, outcome: Outcome, post: bool) -> Response:
        if outcome.next == "login":
            return self.login_form(request)
        if outcome.next == "mfa":
            assert outcome.mfa_token is not None
            return self.mfa_form(request, outcome.mfa_token, outcome.passkey)
        if outcome.next == "consent":
            assert outcome.user is not None
            return self.finish(
                consent_page(
                    action=self.action,
                    params=request.params,
                    csrf_token=self.token,
                    client_name=request.target.client.name,
                    redirect_uri=request.target.redirect_uri,
                    username=outcome.user.username,
                    scopes=request.scope.split(),
                ),
                outcome,
            )
        assert outcome.code is not None
        response = _redirect_to(request.target, self.settings, {"code": outcome.code}, post)
        return self.finish(response, outcome)


_PAGE: dict[str, Any] = {"content": {"text/html": {}}}
_REDIRECT = "To the client's redirect_uri, with a code or an error"
_BAD_REQUEST = "The client or redirect_uri is unknown or the request malformed: an error page"
_GET_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {**_PAGE, "description": "The login or consent page"},
    302: {"description": _REDIRECT},
    400: {**_PAGE, "description": _BAD_REQUEST},
}
_POST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {**_PAGE, "description": "The next page: second factor, consent or the login form"},
    303: {"description": _REDIRECT},
    400: {**_PAGE, "description": _BAD_REQUEST},
    401: {**_PAGE, "description": "Wrong credentials or code: the form again, with the error"},
    403: {**_PAGE, "description": "The form expired or was sent from another site"},
    429: {**_PAGE, "description": "Too many attempts: the form again, with the error"},
}


@router.get("/authorize", response_class=HTMLResponse, responses=_GET_RESPONSES)
async def authorize(request: Request, state: State, ctx: Context) -> Response:
    """RFC 6749 section 4.1.1: the login page, the consent page, or a redirect with a code."""
    params = _parse(request.url.query)
    if params is None:
        return error_page(InvalidAuthorizationTarget.default_message, 400)
    page = _Page(request, state)
    target: Target | None = None
    try:
        async with write_scope(state.database) as db:
            try:
                target = await state.authorize.target(db, params)
            except InvalidAuthorizationTarget as exc:
                return error_page(exc.message, exc.status)
            try:
                authz = state.authorize.request(target, params)
                outcome = await state.authorize.begin(db, authz, page.login, ctx)
            except OAuthError as exc:
                return _error_redirect(target, state.settings, exc, post=False)
    except DATABASE_ERRORS as exc:
        if not database_outage(exc):
            raise
        return _unavailable(exc, target, state.settings, post=False)
    return page.render(authz, outcome, post=False)


@router.post("/authorize", response_class=HTMLResponse, responses=_POST_RESPONSES)
async def authorize_form(request: Request, state: State, ctx: Context) -> Response:
    """The login and consent forms post here, carrying the authorization request."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    params = _parse((await request.body()).decode("utf-8", "replace"))
    if params is None or content_type != FORM_TYPE:
        return error_page(InvalidAuthorizationTarget.default_message, 400)
    page = _Page(request, state)
    values = params.values
    mfa_token = values.get("mfa_token", "")
    passkey = False  # whether the code form, shown again, offers the passkey button
    try:
        target = await _read_target(state, params)
    except InvalidAuthorizationTarget as exc:
        return error_page(exc.message, exc.status)
    except DATABASE_ERRORS as exc:
        if not database_outage(exc):
            raise
        return _unavailable(exc, None, state.settings, post=True)
    try:
        authz = state.authorize.request(target, params)
        _check_csrf(request, page, values.get("csrf_token"))
        action = values.get("action")
        if action not in ("login", "mfa", "allow", "deny", "logout"):
            return error_page(InvalidAuthorizationTarget.default_message, 400)
        async with write_scope(state.database) as db:
            if action == "login":
                outcome = await state.authorize.sign_in(
                    db,
                    authz,
                    values.get("username", ""),
                    values.get("password", ""),
                    page.login,
                    ctx,
                )
            elif action == "mfa":
                passkey = await state.authorize.offers_passkey(db, mfa_token, ctx)
                factor = _factor(values)
                if factor is None:
                    return page.mfa_form(authz, mfa_token, passkey, error=_CODE_MISSING, status=400)
                outcome = await state.authorize.second_factor(
                    db, authz, mfa_token, factor, page.login, ctx
                )
            elif action == "logout":
                # "Not you?" on the consent page: end this browser's sign-in, ask again.
                await state.authorize.sign_out(db, page.login, ctx, "logout")
                return clear_login_cookie(page.login_form(authz), state.settings)
            else:
                outcome = await state.authorize.decide(
                    db, authz, page.login, action == "allow", ctx
                )
    except OAuthError as exc:
        return _error_redirect(target, state.settings, exc, post=True)
    except CSRFRejected:
        return error_page(_EXPIRED, 403)
    except InvalidMfaToken:
        return page.login_form(authz, error=_MFA_EXPIRED, status=401)
    except InvalidMfaCode:
        return page.mfa_form(authz, mfa_token, passkey, error=_BAD_CODE, status=401)
    except InvalidCredentials:
        # The JSON API's generic message: nothing says which check failed.
        return page.login_form(
            authz, username=values.get("username", ""), error=_FAILED, status=401
        )
    except RateLimited as exc:
        if action == "mfa":
            return page.mfa_form(
                authz,
                mfa_token,
                passkey,
                error=_MFA_THROTTLED,
                status=429,
                headers=exc.headers,
            )
        return page.login_form(
            authz,
            username=values.get("username", ""),
            error=_THROTTLED,
            status=429,
            headers=exc.headers,
        )
    except DATABASE_ERRORS as exc:
        if not database_outage(exc):
            raise
        return _unavailable(exc, target, state.settings, post=True)
    return page.render(authz, outcome, post=True)


@router.get(
    "/authorize/passkey.js",
    response_class=Response,
    responses={200: {"content": {"text/javascript": {}}, "description": "The script"}},
)
async def passkey_script() -> Response:
    """The script behind the code form's "Use a passkey" button; the only script any hosted
    page runs."""
    return Response(
        PASSKEY_SCRIPT, media_type="text/javascript", headers={"Cache-Control": _SCRIPT_CACHE}
    )


@router.post("/authorize/passkey/options", responses=error_responses(400, 401, 403, 503))
async def passkey_options(request: Request, state: State, db: WriteDB, ctx: Context) -> Response:
    """WebAuthn request options for the code form's passkey button, bound to the form's
    sign-in. It sends the form's own fields, checked as the form's POST checks them: the
    authorization request, the CSRF token and the mfa_token. The assertion then goes back
    with the form as `credential`. Nothing is spent or counted."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    params = _parse((await request.body()).decode("utf-8", "replace"))
    if params is None or content_type != FORM_TYPE:
        raise InvalidAuthorizationTarget()
    page = _Page(request, state)
    target = await state.authorize.target(db, params)
    state.authorize.request(target, params)
    _check_csrf(request, page, params.values.get("csrf_token"))
    options = await state.authorize.passkey_options(db, params.values.get("mfa_token", ""), ctx)
    # A challenge is single-use: never cached.
    return JSONResponse(options, headers=NO_STORE)


def _factor(values: dict[str, str]) -> Factor | None:
    """The code form's one answer: a code, a recovery code, or the passkey's assertion (the
    PublicKeyCredential as JSON, which the page's script puts in `credential`); None unless
    exactly one was sent and it can be read."""
    credential: dict[str, Any] | None = None
    if "credential" in values:
        try:
            parsed = json.loads(values["credential"])
        except (ValueError, RecursionError):
            return None
        if not isinstance(parsed, dict):
            return None
        credential = parsed
    factor = Factor(
        code=values.get("code"), recovery_code=values.get("recovery_code"), credential=credential
    )
    return factor if factor.given == 1 else None


def _check_csrf(request: Request, page: _Page, token: str | None) -> None:
    """The form's token must be the HMAC of this browser's CSRF cookie (constant-time), and a
    browser that names the form's origin must name ours."""
    origin = request.headers.get("origin")
    own = urlsplit(page.settings.issuer)
    if origin is not None and origin != f"{own.scheme}://{own.netloc}":
        raise CSRFRejected()
    if page.new_csrf or not page.state.csrf.check(page.csrf, token):
        raise CSRFRejected()


__all__ = ["page_headers", "router"]
