"""`authsvc clients`: OAuth 2 clients (RFC 6749 section 2) for the /oauth/token endpoint."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from authsvc.cli.errors import CliError
from authsvc.cli.output import Command, group, table
from authsvc.cli.runner import run

if TYPE_CHECKING:
    from authsvc.cli.runner import AppState

app = group("Manage OAuth 2 clients.")


class Grant(StrEnum):
    """services/clients.py SUPPORTED_GRANTS, spelled out so that help lists them without
    importing the services (tests/test_cli.py checks that they agree)."""

    authorization_code = "authorization_code"
    refresh_token = "refresh_token"  # noqa: S105 - a grant type
    client_credentials = "client_credentials"
    password = "password"  # noqa: S105 - a grant type


@app.command("create", cls=Command)
def create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A name for people to read.")],
    confidential: Annotated[
        bool,
        typer.Option(
            "--confidential",
            help="A client that keeps a secret (a server-side app); without it, a public "
            "client (an SPA, a mobile app).",
        ),
    ] = False,
    audience: Annotated[
        str | None,
        typer.Option(
            metavar="AUD",
            help="The `aud` of the access tokens it gets.  [default: AUTHSVC_AUDIENCE]",
        ),
    ] = None,
    grant: Annotated[
        list[Grant] | None,
        typer.Option(
            "--grant",
            metavar="GRANT",
            help=f"A grant type it may use: {', '.join(Grant)}; repeatable.  "
            "[default: authorization_code and refresh_token; password only when named]",
        ),
    ] = None,
    redirect_uri: Annotated[
        list[str] | None,
        typer.Option(
            "--redirect-uri",
            metavar="URI",
            help="Where the authorization endpoint may send the user back, compared exactly: "
            "https, http on a loopback host, or a private-use scheme (com.example.app:/cb); "
            "repeatable.",
        ),
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            metavar="SCOPE",
            help="A scope it may ask for; repeatable.  [default: any scope the server offers]",
        ),
    ] = None,
    third_party: Annotated[
        bool,
        typer.Option(
            "--third-party",
            help="Show users a consent screen before this client gets a code (first-party "
            "clients, the default, skip it).",
        ),
    ] = False,
) -> None:
    """Register a client and print its client_id.

    A confidential client's secret is printed too, once: only its digest is stored."""
    from authsvc.services.clients import DEFAULT_GRANTS

    async def work(state: AppState) -> list[str]:
        async with state.database.transaction() as db:
            try:
                made = await state.clients.create(
                    db,
                    name,
                    state.clock.now(),
                    confidential=confidential,
                    audience=audience,
                    grant_types=[str(g) for g in grant] if grant else DEFAULT_GRANTS,
                    redirect_uris=redirect_uri or (),
                    scopes=scope or None,
                    first_party=not third_party,
                    actor="cli",
                )
            except ValueError as exc:
                raise CliError(str(exc)) from exc
        client = made.client
        lines = [
            f"client_id: {client.client_id}",
            f"type: {client.client_type}",
            f"grant_types: {' '.join(client.grant_types)}",
        ]
        lines += [f"redirect_uri: {uri}" for uri in client.redirect_uris]
        if made.secret is not None:
            lines.append(f"client_secret: {made.secret}")
            lines.append("(the secret is shown only now; store it safely)")
        return lines

    for line in run(work):
        typer.echo(line)


@app.command("list", cls=Command)
def list_clients() -> None:
    """List clients.

    Columns: client id, type, name, audience, grant types, redirect URIs."""

    async def work(state: AppState) -> list[list[str]]:
        async with state.database.read() as db:
            return [
                [
                    c.client_id,
                    c.client_type,
                    c.name,
                    c.audience or "-",
                    ",".join(c.grant_types or []),
                    " ".join(c.redirect_uris or []) or "-",
                ]
                for c in await state.clients.list(db)
            ]

    table(
        ["CLIENT_ID", "TYPE", "NAME", "AUDIENCE", "GRANTS", "REDIRECT_URIS"],
        run(work),
        "no clients",
    )


# Ids made before ids began with a letter or digit may start with "-": taken as the id, not as
# an unknown option.
@app.command("delete", cls=Command, context_settings={"ignore_unknown_options": True})
def delete(
    client_id: Annotated[str, typer.Argument(metavar="CLIENT_ID", help="The client to delete.")],
) -> None:
    """Delete a client and revoke every session it opened."""

    async def work(state: AppState) -> str:
        async with state.database.transaction() as db:
            revoked = await state.clients.delete(db, client_id, state.clock.now(), actor="cli")
        return f"deleted {client_id}; revoked {revoked} session(s)"

    typer.echo(run(work))
