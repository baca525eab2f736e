"""The hosted pages of the authorization endpoint: server-rendered HTML that works without
JavaScript, every field labelled, and headers that keep it out of frames and caches.

Everything interpolated is escaped (html.escape with quotes). The one stylesheet is inline and
allowed by its hash. No page runs script but the code form of a user with a passkey: it loads
one file served by authsvc (assets/passkey.js), and its Content-Security-Policy allows exactly
that file and the one endpoint it calls, by full URL. Nothing inline ever runs.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from urllib.parse import urlsplit

from fastapi.responses import HTMLResponse

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5}label{display:block;margin-top:1rem;font-weight:600}"
    "input{display:block;width:100%;padding:.5rem;box-sizing:border-box;font-size:1rem}"
    "button{margin:1.25rem .5rem 0 0;padding:.5rem 1.25rem;font-size:1rem}"
    ".error{color:#9b1c1c;border-left:4px solid #9b1c1c;padding-left:.75rem}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
PASSKEY_SCRIPT = (Path(__file__).parent / "assets" / "passkey.js").read_bytes()
# The page names the script by its content: a new release's page never runs a cached old copy,
# and the integrity attribute refuses a copy altered on the way.
_SCRIPT_VERSION = hashlib.sha256(PASSKEY_SCRIPT).hexdigest()[:16]
_SCRIPT_INTEGRITY = "sha384-" + base64.b64encode(hashlib.sha384(PASSKEY_SCRIPT).digest()).decode()
_SCOPE_TEXT = {
    "openid": "Know who you are (your user id)",
    "profile": "See your username",
    "email": "See your email address",
}


def form_target(redirect_uri: str | None) -> str:
    """The CSP source a form submission may end at: the client's redirect target (browsers
    apply form-action to the redirect that follows the POST)."""
    if redirect_uri is None:
        return ""
    parts = urlsplit(redirect_uri)
    if parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{parts.netloc}"
    return f"{parts.scheme}:"


@dataclass(frozen=True)
class PasskeyStep:
    """The code form's passkey button: the full URLs of its script and of the endpoint that
    answers its request options (CSP source expressions need the host; a path without a
    trailing slash matches that one file only)."""

    script: str
    options: str


def page_headers(
    redirect_uri: str | None = None, passkey: PasskeyStep | None = None
) -> dict[str, str]:
    scripts = ""
    if passkey is not None:
        scripts = f"script-src {passkey.script}; connect-src {passkey.options}; "
    csp = (
        f"default-src 'none'; {scripts}style-src 'sha256-{_STYLE_HASH}'; "
        f"form-action 'self' {form_target(redirect_uri)}".rstrip()
        + "; frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",  # for browsers without CSP frame-ancestors
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        # The page's URL carries the authorization request: never sent to another origin.
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
    }


def _page(
    title: str,
    main: str,
    status: int,
    redirect_uri: str | None,
    headers: Mapping[str, str] | None = None,
    passkey: PasskeyStep | None = None,
) -> HTMLResponse:
    script = ""
    if passkey is not None:
        src = f"{passkey.script}?v={_SCRIPT_VERSION}"
        script = f'<script src="{escape(src)}" integrity="{_SCRIPT_INTEGRITY}" defer></script>'
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style>{script}</head>"
        f"<body><main>{main}</main></body></html>"
    )
    return HTMLResponse(
        html,
        status_code=status,
        headers={**page_headers(redirect_uri, passkey), **(headers or {})},
    )


def _hidden(params: Mapping[str, str], csrf_token: str) -> str:
    fields = [
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in params.items()
    ]
    fields.append(f'<input type="hidden" name="csrf_token" value="{escape(csrf_token)}">')
    return "".join(fields)


def _form(action: str, params: Mapping[str, str], csrf_token: str) -> str:
    """The opening of a form that posts the authorization request back, with its CSRF token."""
    return f'<form method="post" action="{escape(action)}">{_hidden(params, csrf_token)}'


def _sign_in_step(title: str, client_name: str, error: str | None) -> tuple[str, str]:
    """A sign-in step's heading and error alert, and the attributes that tie its fields to
    that alert for screen readers (empty without an error)."""
    head = f"<h1>{escape(title)}</h1><p>to continue to <strong>{escape(client_name)}</strong></p>"
    if not error:
        return head, ""
    alert = f'<p class="error" role="alert" id="error">{escape(error)}</p>'
    return head + alert, ' aria-describedby="error" aria-invalid="true"'


def login_page(
    *,
    action: str,
    params: Mapping[str, str],
    csrf_token: str,
    client_name: str,
    redirect_uri: str,
    username: str = "",
    error: str | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    head, described = _sign_in_step("Sign in", client_name, error)
    main = (
        f"{head}{_form(action, params, csrf_token)}"
        '<label for="username">Username</label>'
        f'<input id="username" name="username" autocomplete="username" required'
        f' value="{escape(username)}"{described}>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password"'
        f' autocomplete="current-password" required{described}>'
        '<button type="submit" name="action" value="login">Sign in</button></form>'
    )
    return _page("Sign in", main, status, redirect_uri, headers)


def mfa_page(
    *,
    action: str,
    params: Mapping[str, str],
    csrf_token: str,
    mfa_token: str,
    client_name: str,
    redirect_uri: str,
    error: str | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    passkey: PasskeyStep | None = None,
) -> HTMLResponse:
    """The second step of signing in: a code from the authenticator app, or a recovery code;
    with `passkey`, also a button (shown by its script, so never without it) that answers
    with one of the user's passkeys through the same form."""
    head, described = _sign_in_step("Two-factor authentication", client_name, error)
    passkey_button = ""
    if passkey is not None:
        passkey_button = (
            '<input type="hidden" name="credential" value="">'
            f'<button type="button" id="passkey" data-options="{escape(passkey.options)}"'
            ' hidden>Use a passkey</button><p id="passkey-status" role="status"></p>'
        )
    main = (
        f"{head}{_form(action, {**params, 'mfa_token': mfa_token}, csrf_token)}"
        '<label for="code">Code from your authenticator app</label>'
        '<input id="code" name="code" inputmode="numeric" pattern="[0-9]*"'
        f' autocomplete="one-time-code" maxlength="6"{described}>'
        '<label for="recovery_code">Or a recovery code</label>'
        f'<input id="recovery_code" name="recovery_code" autocomplete="off"{described}>'
        f'<button type="submit" name="action" value="mfa">Verify</button>{passkey_button}</form>'
    )
    return _page("Two-factor authentication", main, status, redirect_uri, headers, passkey)


def consent_page(
    *,
    action: str,
    params: Mapping[str, str],
    csrf_token: str,
    client_name: str,
    redirect_uri: str,
    username: str,
    scopes: Sequence[str],
) -> HTMLResponse:
    items = "".join(
        f"<li>{escape(_SCOPE_TEXT.get(s, f'Use “{s}” on your behalf'))}</li>" for s in scopes
    )
    main = (
        f"<h1>Allow access?</h1><p><strong>{escape(client_name)}</strong> asks to:</p>"
        f"<ul>{items}</ul><p>You are signed in as <strong>{escape(username)}</strong>.</p>"
        f"{_form(action, params, csrf_token)}"
        '<button type="submit" name="action" value="allow">Allow</button>'
        '<button type="submit" name="action" value="deny">Deny</button>'
        '<button type="submit" name="action" value="logout">Not you? Sign out</button></form>'
    )
    return _page("Allow access?", main, 200, redirect_uri)


def message_page(
    title: str, message: str, status: int, headers: Mapping[str, str] | None = None
) -> HTMLResponse:
    """A page that only says something: a heading and a paragraph (announced at once to screen
    readers when it is an error)."""
    role = ' role="alert"' if status >= 400 else ""
    main = f"<h1>{escape(title)}</h1><p{role}>{escape(message)}</p>"
    return _page(title, main, status, None, headers)


def error_page(message: str, status: int, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    return message_page("Cannot continue", message, status, headers)
