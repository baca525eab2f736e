"""/oauth/logout: the end_session_endpoint of OpenID Connect RP-Initiated Logout 1.0.

A browser comes here (GET with query parameters, or POST with a form, section 2) and leaves with
a redirect to the client's registered post_logout_redirect_uri, or a plain "signed out" page.
Errors are pages too, never redirects: a request that cannot be honoured must not send the user
anywhere it names (section 3).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from authsvc.api.authorize import clear_login_cookie, login_cookie
from authsvc.api.deps import Context, State, WriteDB
from authsvc.api.errors import ShapedErrorRoute
from authsvc.api.oauth_params import FORM_TYPE, parse_form
from authsvc.api.pages import message_page
from authsvc.errors import AuthError

# Section 2; logout_hint and ui_locales are optional and not used, so ignored like any other.
PARAMS = frozenset({"id_token_hint", "client_id", "post_logout_redirect_uri", "state"})


class EndSessionRoute(ShapedErrorRoute):
    """Every error of the endpoint as a page (drawn by the app's error handlers, after the
    request's write scope has rolled back)."""

    @staticmethod
    def render_error(exc: AuthError) -> Response:
        return _error(exc)


def _error(exc: AuthError) -> Response:
    return message_page("Sign-out failed", exc.message, exc.status, exc.headers)


async def _params(request: Request) -> dict[str, str]:
    """Query parameters (GET) or the form body (POST), by the rules of every /oauth endpoint
    (api/oauth_params.py): known ones once, unknown ones ignored, empty ones omitted."""
    if request.method == "POST":
        content_type = request.headers.get("content-type", "")
        return parse_form(await request.body(), content_type, PARAMS)
    return parse_form(request.scope.get("query_string", b""), FORM_TYPE, PARAMS)


Params = Annotated[dict[str, str], Depends(_params)]

router = APIRouter(prefix="/oauth", tags=["oauth"], route_class=EndSessionRoute)


async def end_session(
    request: Request, state: State, db: WriteDB, ctx: Context, params: Params
) -> Response:
    """`id_token_hint` (required), optional `client_id`, `post_logout_redirect_uri` (one of
    the client's registered redirect URIs) and `state`. 303 to that URI, or 200 page. The
    hosted login page's sign-in cookie of the same user is ended and cleared too."""
    cookie = request.cookies.get(login_cookie(state.settings))
    ended = await state.end_session.end_session(db, params, cookie, ctx)
    response: Response
    if ended.redirect is None:
        response = message_page("Signed out", "You are signed out.", 200)
    else:
        response = RedirectResponse(ended.redirect, status_code=303)
    if ended.clear_cookie:
        clear_login_cookie(response, state.settings)
    return response


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "Signed out"},
    303: {"description": "Redirect to the post_logout_redirect_uri"},
    400: {"content": {"text/html": {}}, "description": "The request cannot be honoured"},
    503: {"content": {"text/html": {}}, "description": "The database is unavailable; retry later"},
}
router.add_api_route(
    "/logout", end_session, methods=["GET"], response_class=HTMLResponse, responses=_RESPONSES
)
router.add_api_route(
    "/logout",
    end_session,
    methods=["POST"],
    response_class=HTMLResponse,
    responses=_RESPONSES,
    name="end_session_post",
)
