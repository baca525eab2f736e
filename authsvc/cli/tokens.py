"""`authsvc token inspect`: every check of an access token, one by one."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from authsvc.cli.errors import CliError
from authsvc.cli.output import Command, group
from authsvc.cli.runner import settings as load

app = group("Inspect tokens.")

# A JWS in compact serialisation (RFC 7515 section 7.1): three base64url parts.
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


@app.command("inspect", cls=Command)
def inspect(
    token: Annotated[
        str,
        typer.Argument(metavar="TOKEN", help="The access token, or - to read it from stdin."),
    ],
    jwks: Annotated[
        str | None,
        typer.Option(
            metavar="FILE_OR_URL",
            help="Where to read the JWKS: a file (saved from /.well-known/jwks.json) or a URL. "
            " [default: the JWKS of --url]",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="authsvc's base URL, for the JWKS and the revocation feed.  [default: the issuer]",
        ),
    ] = None,
    issuer: Annotated[
        str | None,
        typer.Option(metavar="ISS", help="The `iss` to expect.  [default: AUTHSVC_ISSUER]"),
    ] = None,
    audience: Annotated[
        str | None,
        typer.Option(
            metavar="AUD",
            help="The `aud` to expect (an OAuth client's own audience, if it has one).  "
            "[default: AUTHSVC_AUDIENCE]",
        ),
    ] = None,
    revocation: Annotated[
        bool,
        typer.Option(
            show_default=False,
            help="Check the revocation feed (a GET of the public feed: the token is not sent)."
            "  [default: --revocation]",
        ),
    ] = True,
) -> None:
    """Check an access token, showing every check's verdict.

    The checks: signature, header, issuer, audience, times, revocation. Exit 0 if the token is
    valid, 1 if not.

    The token never leaves this machine: the JWKS and the revocation feed are fetched with
    plain GETs."""
    from authsvc.verifier.inspect import run as run_inspection

    if (
        jwks is not None
        and not jwks.startswith(("http://", "https://"))
        and not Path(jwks).is_file()
    ):
        raise typer.BadParameter(
            f"no such file: {jwks} (save it with: curl -o {jwks} <authsvc>/.well-known/jwks.json)",
            param_hint="'--jwks'",
        )
    if token == "-":  # noqa: S105 - the stdin marker, not a secret
        token = sys.stdin.readline()
    token = token.strip()
    if not _COMPACT.fullmatch(token):
        raise CliError(
            "this is not a JWT (an access token is three base64url parts joined by dots)",
            "refresh tokens are opaque and cannot be inspected",
        )
    settings = load()
    expected_issuer = issuer or settings.issuer
    code = run_inspection(
        token,
        issuer=expected_issuer,
        audience=audience or settings.audience,
        leeway=settings.token_leeway_seconds,
        authsvc_url=url or expected_issuer,
        jwks=jwks,
        check_revocation=revocation,
        echo=typer.echo,
    )
    raise typer.Exit(code)
