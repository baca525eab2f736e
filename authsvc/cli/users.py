"""`authsvc users`: accounts are made and managed here only (there is no sign-up endpoint)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from authsvc.cli.errors import CliError
from authsvc.cli.output import Command, group, table, when
from authsvc.cli.runner import confirm, read_password, run

if TYPE_CHECKING:
    from authsvc.cli.runner import AppState
    from authsvc.services.admin import RolesChange, UserAdmin

ACTOR = "cli"

app = group("Manage users (the only way to create them).")

Name = Annotated[str, typer.Argument(metavar="NAME", help="The user's name (any case).")]
Roles = Annotated[
    list[str] | None,
    typer.Option(
        "--role",
        metavar="ROLE",
        help="A role, repeatable. Roles are labels carried in the tokens' `roles` claim; "
        "what they allow is up to the resource servers.",
    ),
]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of standard input instead of the "
        "terminal (for scripts).",
    ),
]


def _admin(state: AppState) -> UserAdmin:
    return state.admin


@app.command("create", cls=Command)
def create(name: Name, role: Roles = None, password_stdin: PasswordStdin = False) -> None:
    """Create a user.

    The password is asked for twice on the terminal, or read with --password-stdin."""
    password = read_password(password_stdin)

    async def work(state: AppState) -> str:
        async with state.database.transaction() as db:
            try:
                user = await state.users.create(
                    db, name, password, state.clock.now(), role or [], actor=ACTOR
                )
            except ValueError as exc:  # a role with spaces, ...
                raise CliError(str(exc)) from exc
            return f"created user {user.username} ({user.id})"

    typer.echo(run(work))


@app.command("list", cls=Command)
def list_users() -> None:
    """List users.

    Columns: name, status, roles, creation time, id."""

    async def work(state: AppState) -> list[list[str]]:
        async with state.database.read() as db:
            return [
                [
                    u.username,
                    "active" if u.is_active else "disabled",
                    ",".join(u.roles or []),
                    when(u.created_at),
                    str(u.id),
                ]
                for u in await state.users.list(db)
            ]

    table(["USERNAME", "STATUS", "ROLES", "CREATED", "ID"], run(work), "no users")


@app.command("set-roles", cls=Command)
def set_roles(
    name: Name,
    role: Roles = None,
    revoke_sessions: Annotated[
        bool,
        typer.Option(
            "--revoke-sessions",
            help="Also revoke the user's sessions, so that no token with the old roles stays "
            "valid (they log in again).",
        ),
    ] = False,
) -> None:
    """Replace a user's roles.

    The new roles are the --role options given (none: no roles).

    Tokens issued from now on, refreshes included, carry the new roles; access tokens already
    issued keep the old ones until they expire, unless --revoke-sessions."""

    async def work(state: AppState) -> RolesChange:
        async with state.database.transaction() as db:
            try:
                return await _admin(state).set_roles(
                    db,
                    await state.users.get(db, name),
                    role or [],
                    state.clock.now(),
                    ACTOR,
                    revoke_sessions=revoke_sessions,
                )
            except ValueError as exc:
                raise CliError(str(exc)) from exc

    change = run(work)
    roles = ",".join(change.user.roles) or "(none)"
    typer.echo(
        f"roles of {change.user.username}: {roles} (were {','.join(change.previous) or '(none)'})"
    )
    if revoke_sessions:
        typer.echo(f"revoked {change.sessions_revoked} session(s)")


def _set_active(name: str, active: bool) -> None:
    async def work(state: AppState) -> str:
        async with state.database.transaction() as db:
            user = await state.users.set_active(db, name, active, state.clock.now(), actor=ACTOR)
            return f"{'enabled' if active else 'disabled'} {user.username}"

    typer.echo(run(work))


@app.command("disable", cls=Command)
def disable(name: Name) -> None:
    """Disable a user and revoke their sessions.

    They cannot log in until `users enable`."""
    _set_active(name, False)


@app.command("enable", cls=Command)
def enable(name: Name) -> None:
    """Enable a disabled user."""
    _set_active(name, True)


@app.command("set-password", cls=Command)
def set_password(name: Name, password_stdin: PasswordStdin = False) -> None:
    """Set a user's password and revoke their sessions."""
    password = read_password(password_stdin)

    async def work(state: AppState) -> str:
        async with state.database.transaction() as db:
            user = await state.users.set_password(
                db, name, password, state.clock.now(), actor=ACTOR
            )
            return f"password set for {user.username}"

    typer.echo(run(work))


@app.command("delete", cls=Command)
def delete(
    name: Name,
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask for confirmation (for scripts).")
    ] = False,
) -> None:
    """Delete a user for good.

    Their sessions are revoked first (their access tokens are
    refused at once here, and by resource servers at their next poll of the revocation feed),
    then the account, its sessions and refresh tokens are deleted. The audit trail keeps their
    events. `users disable` is the reversible alternative."""
    confirm(f"Delete user {name} and revoke their sessions?", yes=yes)

    async def work(state: AppState) -> str:
        async with state.database.transaction() as db:
            user = await state.users.get(db, name)
            revoked = await _admin(state).delete(db, user, state.clock.now(), ACTOR)
        return f"deleted user {user.username}; revoked {revoked} session(s)"

    typer.echo(run(work))
