"""/oauth/userinfo: the OpenID Connect UserInfo endpoint (Core 1.0 section 5.3), GET and POST.

The access token comes in the Authorization header (section 5.3.1, RFC 6750 section 2.1),
through the same dependency as /auth/me; errors are RFC 6750 section 3 challenges with the
RFC 6749 section 5.2 body the other /oauth endpoints use.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from authsvc.api.deps import Bearer, Context, ReadDB, State
from authsvc.api.errors import error_responses
from authsvc.api.oauth import OAuthRoute
from authsvc.errors import NO_STORE

router = APIRouter(prefix="/oauth", tags=["oauth"], route_class=OAuthRoute)

# 400: a repeated Authorization header (api/http_guard.py); 503: the database is away.
_ERRORS = error_responses(400, 401, 403, 503, oauth=True)


async def userinfo(state: State, db: ReadDB, ctx: Context, token: Bearer) -> JSONResponse:
    """Claims about the user, by the token's scopes: `sub` always, `preferred_username` with
    `profile`. 401 invalid_token, 403 insufficient_scope without `openid`."""
    # Section 5.3.2: claims about a person, never cached.
    return JSONResponse(await state.userinfo.claims(db, token, ctx), headers=NO_STORE)


router.add_api_route("/userinfo", userinfo, methods=["GET"], responses=_ERRORS)
# Section 5.3.1: POST too, with the token in the header (a body is not read).
router.add_api_route(
    "/userinfo", userinfo, methods=["POST"], responses=_ERRORS, name="userinfo_post"
)
