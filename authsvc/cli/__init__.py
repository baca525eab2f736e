"""The operator's command line: one module per command group.

Exit codes: 0 success, 1 the operation was refused (no such user, name taken, an invalid token
for `token inspect`), 2 bad usage, configuration or database (one line on stderr with a hint;
`--debug` adds the traceback).

Modules import the heavy parts (the app, SQLAlchemy) inside their commands, so that `--help`
and `--version` answer at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from authsvc import __version__
from authsvc.cli import audit, clients, feed, keys, maintenance, serve, sessions, tokens, users
from authsvc.cli.audit import parse_since
from authsvc.cli.errors import Group
from authsvc.cli.output import Command

__all__ = ["app", "main", "parse_since"]

app = typer.Typer(
    cls=Group,
    help="authsvc: a token server (RS256 access tokens, rotating refresh tokens, JWKS).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"authsvc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="On an error, show the traceback too (as AUTHSVC_LOG_LEVEL=debug does).",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """authsvc: a token server (RS256 access tokens, rotating refresh tokens, JWKS)."""


app.command("serve", cls=Command)(serve.serve)
app.command("migrate", cls=Command)(maintenance.migrate)
app.command("prune", cls=Command)(maintenance.prune)
app.command("audit", cls=Command)(audit.audit)
app.add_typer(users.app, name="users")
app.add_typer(sessions.app, name="sessions")
app.add_typer(clients.app, name="clients")
app.add_typer(keys.app, name="keys")
app.add_typer(tokens.app, name="token")
app.add_typer(feed.app, name="feed")


def main() -> None:
    app(prog_name="authsvc")
