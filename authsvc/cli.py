"""The operator's command line: serve, migrate, users, keys, prune.

Exit codes: 0 success, 1 the operation was refused (no such user, name taken, ...),
2 bad usage or configuration.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

import typer

from authsvc.config import ConfigError, Settings, load_settings
from authsvc.errors import AuthError
from authsvc.state import AppState

T = TypeVar("T")

app = typer.Typer(help="authsvc: a token server.", no_args_is_help=True, add_completion=False)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage signing keys.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
token_app = typer.Typer(help="Inspect tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")
clients_app = typer.Typer(help="Manage OAuth 2 clients.", no_args_is_help=True)
app.add_typer(clients_app, name="clients")


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _run(work: Callable[[AppState], Awaitable[T]], *, migrate: bool = True) -> T:
    """Run one unit of CLI work against the configured database, with the app's services."""
    from authsvc.state import build_state  # the CLI stays fast to start for --help

    settings = _settings()

    async def main() -> T:
        try:
            state = build_state(settings)
        except ConfigError as exc:
            raise _fail(f"configuration error: {exc}", 2) from exc
        try:
            if migrate and settings.should_auto_migrate:
                from authsvc.store.db import upgrade_async

                await upgrade_async(settings.resolved_database_url)
            return await work(state)
        finally:
            await state.database.dispose()

    try:
        return asyncio.run(main())
    except AuthError as exc:
        raise _fail(exc.message) from exc


def _read_password(from_stdin: bool, confirm: bool = True) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Repeat password: ") != password:
            raise _fail("the passwords do not match", 2)
    if not password:
        raise _fail("empty password", 2)
    return password


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Start the HTTP server (migrating the embedded SQLite database first)."""
    from authsvc.server import serve as run_server

    settings = _settings()
    try:
        run_server(settings, host or settings.host, port or settings.port, workers)
    except ConfigError as exc:
        raise _fail(f"configuration error: {exc}", 2) from exc


@app.command()
def migrate() -> None:
    """Bring the database schema to the latest revision."""
    from authsvc.store.db import head_revision, upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    typer.echo(f"database at revision {head_revision()}")


@users_app.command("create")
def users_create(
    name: str,
    role: Annotated[list[str] | None, typer.Option("--role", help="A role; repeatable.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create a user."""
    password = _read_password(password_stdin)

    async def work(state: AppState) -> str:
        async with state.database.transaction() as db:
            user = await state.users.create(
                db, name, password, state.clock.now(), role or [], actor="cli"
            )
            return f"created user {user.username} ({user.id})"

    try:
        typer.echo(_run(work))
    except ValueError as exc:
        raise _fail(str(exc), 2) from exc


@users_app.command("list")
def users_list() -> None:
    """List users."""

    async def work(state: AppState) -> list[str]:
        async with state.database.read() as db:
            return [
                f"{u.username}\t{u.id}\t{'active' if u.is_active else 'disabled'}\t"
                f"{','.join(u.roles or [])}"
                for u in await state.users.list(db)
            ]

    for line in _run(work):
        typer.echo(line)


def _set_active(name: str, active: bool) -> None:
    async def work(state: AppState) -> str:
        async with state.database.transaction() as db:
            user = await state.users.set_active(db, name, active, state.clock.now(), actor="cli")
            return f"{'enabled' if active else 'disabled'} {user.username}"

    typer.echo(_run(work))


@users_app.command("disable")
def users_disable(name: str) -> None:
    """Disable a user and revoke their sessions."""
    _set_active(name, False)


@users_app.command("enable")
def users_enable(name: str) -> None:
    """Enable a user."""
    _set_active(name, True)


@users_app.command("set-password")
def users_set_password(
    name: str,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
) -> None:
    """Set a user's password and revoke their sessions."""
    password = _read_password(password_stdin)

    async def work(state: AppState) -> str:
        async with state.database.transaction() as db:
            user = await state.users.set_password(
                db, name, password, state.clock.now(), actor="cli"
            )
            return f"password set for {user.username}"

    typer.echo(_run(work))


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Publish a new signing key; it signs after the publish-ahead time."""

    async def work(state: AppState) -> str:
        async with state.database.transaction() as db:
            await state.keys.ensure_signing_key(db, state.clock.now())
            info = await state.keys.rotate(db, state.clock.now(), actor="cli")
        return f"published {info.kid}; signs from {info.activates_at.isoformat()}"

    typer.echo(_run(work))


@keys_app.command("list")
def keys_list() -> None:
    """Show every signing key and its state."""

    async def work(state: AppState) -> list[str]:
        async with state.database.read() as db:
            infos = await state.keys.list(db, state.clock.now())
        return [
            f"{k.kid}\t{k.state}\tcreated {k.created_at.isoformat()}\t"
            f"signs from {k.activates_at.isoformat()}\t"
            f"retires {k.retires_at.isoformat() if k.retires_at else '-'}"
            for k in infos
        ]

    for line in _run(work):
        typer.echo(line)


@keys_app.command("new-kek")
def keys_new_kek() -> None:
    """Print a fresh key-encryption key for AUTHSVC_KEY_ENCRYPTION_KEY."""
    from authsvc.security.secrets import new_kek

    typer.echo(new_kek())


@clients_app.command("create")
def clients_create(
    name: str,
    confidential: Annotated[
        bool, typer.Option("--confidential", help="A client with a secret (server-side apps).")
    ] = False,
    audience: Annotated[
        str | None, typer.Option(help="`aud` of its access tokens (default AUTHSVC_AUDIENCE).")
    ] = None,
    grant: Annotated[
        list[str] | None,
        typer.Option("--grant", help="Allowed grant type; repeatable (default: all)."),
    ] = None,
) -> None:
    """Register a client; a confidential client's secret is printed once, never stored."""
    from authsvc.services.clients import SUPPORTED_GRANTS

    async def work(state: AppState) -> list[str]:
        async with state.database.transaction() as db:
            made = await state.clients.create(
                db,
                name,
                state.clock.now(),
                confidential=confidential,
                audience=audience,
                grant_types=grant or SUPPORTED_GRANTS,
            )
        lines = [f"client_id: {made.client.client_id}", f"type: {made.client.client_type}"]
        if made.secret is not None:
            lines.append(f"client_secret: {made.secret}")
            lines.append("(the secret is shown only now; store it safely)")
        return lines

    try:
        for line in _run(work):
            typer.echo(line)
    except ValueError as exc:
        raise _fail(str(exc), 2) from exc


@clients_app.command("list")
def clients_list() -> None:
    """List clients: id, type, name, audience, grant types."""

    async def work(state: AppState) -> list[str]:
        async with state.database.read() as db:
            return [
                f"{c.client_id}\t{c.client_type}\t{c.name}\t{c.audience or '-'}\t"
                f"{','.join(c.grant_types or [])}"
                for c in await state.clients.list(db)
            ]

    for line in _run(work):
        typer.echo(line)


@clients_app.command("delete")
def clients_delete(client_id: str) -> None:
    """Delete a client and revoke every session it opened."""

    async def work(state: AppState) -> str:
        async with state.database.transaction() as db:
            revoked = await state.clients.delete(db, client_id, state.clock.now())
        return f"deleted {client_id}; revoked {revoked} session(s)"

    typer.echo(_run(work))


@app.command()
def prune(
    batch: Annotated[
        int | None, typer.Option(min=1, help="Rows per transaction [AUTHSVC_PRUNE_BATCH].")
    ] = None,
) -> None:
    """Delete expired denylist entries, refresh tokens, sessions and retired keys."""
    from authsvc.services.maintenance import prune as run_prune

    async def work(state: AppState) -> str:
        size = batch or state.settings.prune_batch
        report = await run_prune(state.database, state.keys, state.clock.now(), size)
        return (
            f"pruned denylist={report.denylist} refresh_tokens={report.refresh_tokens} "
            f"sessions={report.sessions} signing_keys={report.signing_keys} "
            f"revocation_events={report.revocation_events} audit_events={report.audit_events}"
        )

    typer.echo(_run(work))


@token_app.command("inspect")
def token_inspect(
    token: Annotated[str, typer.Argument(help="The access token, or - to read it from stdin.")],
    jwks: Annotated[
        str | None, typer.Option(help="JWKS URL or file; default: the configured authsvc's.")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="authsvc base URL; default: AUTHSVC_ISSUER.")
    ] = None,
    revocation: Annotated[
        bool, typer.Option(help="Check the revocation feed (a GET; the token is not sent).")
    ] = True,
) -> None:
    """Decode an access token and show every check's verdict (exit 0 valid, 1 invalid)."""
    from authsvc.verifier.inspect import run as inspect

    settings = _settings()
    if token == "-":  # noqa: S105 - the stdin marker, not a secret
        token = sys.stdin.readline().strip()
    code = inspect(
        token,
        issuer=settings.issuer,
        audience=settings.audience,
        leeway=settings.token_leeway_seconds,
        authsvc_url=url or settings.issuer,
        jwks=jwks,
        check_revocation=revocation,
        echo=typer.echo,
    )
    raise typer.Exit(code)


_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, now: datetime) -> datetime:
    """An ISO 8601 time (UTC if no zone) or a duration back from now: 90s, 30m, 12h, 7d, 2w."""
    match = _DURATION.fullmatch(value.strip())
    if match:
        return now - timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise _fail(
            f"--since: not an ISO time or a duration like 30m, 12h, 7d: {value!r}", 2
        ) from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command()
def audit(
    user: Annotated[str | None, typer.Option("--user", help="Only events about this user.")] = None,
    since: Annotated[
        str | None, typer.Option(help="ISO time, or a duration back from now: 30m, 12h, 7d.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 100,
) -> None:
    """Show the audit trail, newest first (tab-separated; details as JSON)."""
    import json

    from authsvc.services import audit as audit_log
    from authsvc.services.users import normalize_username

    async def work(state: AppState) -> list[str]:
        start = parse_since(since, state.clock.now()) if since else None
        async with state.database.read() as db:
            user_id = None
            name = None
            if user is not None:
                try:
                    name = normalize_username(user)
                    user_id = (await state.users.get(db, name)).id
                except AuthError:
                    pass  # a deleted or never-existing user: match the recorded name only
                if name is None:
                    return []
            events = await audit_log.find(
                db, user_id=user_id, username=name, since=start, limit=limit
            )
        return [
            "\t".join(
                [
                    e.at.isoformat(),
                    e.event,
                    e.username or (str(e.user_id) if e.user_id else "-"),
                    str(e.session_id) if e.session_id else "-",
                    e.ip or "-",
                    e.actor or "-",
                    json.dumps(e.details, sort_keys=True) if e.details else "-",
                ]
            )
            for e in events
        ]

    for line in _run(work):
        typer.echo(line)


def main() -> None:
    app()
