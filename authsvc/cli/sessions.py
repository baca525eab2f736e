"""`authsvc sessions`: a user's login sessions, and ending them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from authsvc.cli.errors import CliError
from authsvc.cli.output import Command, group, table, when
from authsvc.cli.runner import run
from authsvc.cli.users import ACTOR, Name, _admin

if TYPE_CHECKING:
    from authsvc.cli.runner import AppState

app = group("List and revoke users' sessions.")


@app.command("list", cls=Command)
def list_sessions(name: Name) -> None:
    """List a user's live sessions, newest first."""

    async def work(state: AppState) -> list[list[str]]:
        async with state.database.read() as db:
            user = await state.users.get(db, name)
            sessions = await _admin(state).sessions(db, user, state.clock.now())
        return [
            [
                str(s.id),
                when(s.created_at),
                when(s.last_used_at),
                when(s.expires_at),
                s.client_ip or "-",
                s.client_id or "-",
                s.user_agent or "-",
            ]
            for s in sessions
        ]

    table(
        ["SESSION", "CREATED", "LAST_USED", "EXPIRES", "IP", "CLIENT", "USER_AGENT"],
        run(work),
        f"no live sessions for {name}",
    )


@app.command("revoke", cls=Command)
def revoke(
    session_id: Annotated[
        str | None,
        typer.Argument(
            metavar="SESSION", help="The session to revoke (an id from `sessions list`)."
        ),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user", metavar="NAME", help="With --all: the user whose sessions to revoke."
        ),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Revoke every live session of --user.")
    ] = False,
) -> None:
    """Revoke one session, or all of a user's.

    Give a SESSION id, or --user NAME --all.

    A revoked session cannot be refreshed; its access tokens are refused here at once and by
    resource servers at their next poll of the revocation feed. The user may log in again
    (`users disable` prevents that)."""
    if (session_id is None) == (user is None) or (user is not None) != everything:
        raise CliError("give either a SESSION id, or --user NAME --all")

    async def work(state: AppState) -> str:
        now = state.clock.now()
        async with state.database.transaction() as db:
            if session_id is not None:
                owner = await _admin(state).revoke_session(db, session_id, now, ACTOR)
                return f"revoked session {session_id} of {owner.username}"
            assert user is not None
            found = await state.users.get(db, user)
            revoked = await _admin(state).revoke_sessions(db, found, now, ACTOR)
            return f"revoked {revoked} session(s) of {found.username}"

    typer.echo(run(work))
