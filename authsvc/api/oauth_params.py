"""The parameters of an /oauth request body (RFC 6749 section 3.1, 3.2; RFC 7009; RFC 7662).

- form-encoded UTF-8 only;
- a parameter sent without a value is treated as omitted (section 3.1), so an empty required
  one is refused as missing by the service;
- a parameter the endpoint knows, sent twice, is refused with `invalid_request` (section 3.1:
  "MUST NOT be included more than once"): which copy counts would be a guess;
- parameters the endpoint does not know are ignored (section 3.1), even repeated.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import Request

from authsvc.errors import OAuthInvalidRequest

FORM_TYPE = "application/x-www-form-urlencoded"
# A bound on the work one body may ask for (the body is already capped in bytes); well above
# what any client sends, extensions included.
MAX_FIELDS = 64

_CLIENT = frozenset({"client_id", "client_secret"})
TOKEN_PARAMS = _CLIENT | {"grant_type", "username", "password", "refresh_token", "scope"}
# RFC 6749 section 4.1.3, RFC 7636 section 4.5.
CODE_PARAMS = frozenset({"code", "redirect_uri", "code_verifier"})
TOKEN_HINT_PARAMS = _CLIENT | {"token", "token_type_hint"}
KNOWN: dict[str, frozenset[str]] = {
    "/oauth/token": TOKEN_PARAMS | CODE_PARAMS,
    "/oauth/revoke": TOKEN_HINT_PARAMS,
    "/oauth/introspect": TOKEN_HINT_PARAMS,
}


def parse_form(body: bytes, content_type: str, known: frozenset[str]) -> dict[str, str]:
    """The known, non-empty parameters of a form body, each sent once."""
    if content_type.split(";")[0].strip().lower() != FORM_TYPE:
        raise OAuthInvalidRequest(f"The body must be {FORM_TYPE}.")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthInvalidRequest("The body is not valid form data.") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name not in known:
            continue
        if name in form:
            raise OAuthInvalidRequest(f"The {name} parameter is repeated.")
        form[name] = value
    return {name: value for name, value in form.items() if value != ""}


async def oauth_form(request: Request) -> dict[str, str]:
    """The request's parameters, as far as its endpoint knows them (a dependency)."""
    known = KNOWN[request.scope["path"]]
    return parse_form(await request.body(), request.headers.get("content-type", ""), known)
