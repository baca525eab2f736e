"""The operator's command line: serve, migrate, users, keys, prune.

Exit codes: 0 success, 1 the operation was refused (no such user, name taken, ...),
2 bad usage or configuration.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from authsvc.api.state import AppState
from authsvc.config import ConfigError, Settings, load_settings
from authsvc.errors import AuthError

T = TypeVar("T")

app = typer.Typer(help="authsvc: a token server.", no_args_is_help=True, add_completion=False)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage signing keys.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")


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
    from authsvc.app import build_state  # the CLI stays fast to start for --help

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
    import uvicorn

    from authsvc.security.secrets import load_secrets
    from authsvc.store.db import upgrade

    settings = _settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    try:
        load_secrets(settings)  # create the development KEK once, before workers race for it
    except ConfigError as exc:
        raise _fail(f"configuration error: {exc}", 2) from exc
    if settings.should_auto_migrate:
        upgrade(settings.resolved_database_url)
    if workers > 1 and settings.is_sqlite:
        typer.echo("note: SQLite is for a single host; use PostgreSQL to scale out", err=True)
    uvicorn.run(
        "authsvc.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        proxy_headers=False,
        server_header=False,
    )


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
            user = await state.users.create(db, name, password, state.clock.now(), role or [])
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
            user = await state.users.set_active(db, name, active, state.clock.now())
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
            user = await state.users.set_password(db, name, password, state.clock.now())
            return f"password set for {user.username}"

    typer.echo(_run(work))


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Publish a new signing key; it signs after the publish-ahead time."""

    async def work(state: AppState) -> str:
        async with state.database.transaction() as db:
            await state.keys.ensure_signing_key(db, state.clock.now())
            info = await state.keys.rotate(db, state.clock.now())
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


@app.command()
def prune(batch: Annotated[int, typer.Option(min=1)] = 1000) -> None:
    """Delete expired denylist entries, refresh tokens, sessions and retired keys."""
    from authsvc.services.maintenance import prune as run_prune

    async def work(state: AppState) -> str:
        report = await run_prune(state.database, state.keys, state.clock.now(), batch)
        return (
            f"pruned denylist={report.denylist} refresh_tokens={report.refresh_tokens} "
            f"sessions={report.sessions} signing_keys={report.signing_keys}"
        )

    typer.echo(_run(work))


def main() -> None:
    app()
