"""`authsvc keys`: signing keys and the key-encryption key."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from authsvc.cli.output import Command, group, table, when
from authsvc.cli.runner import run

if TYPE_CHECKING:
    from authsvc.cli.runner import AppState

app = group("Manage signing keys and the key-encryption key.")


@app.command("rotate", cls=Command)
def rotate() -> None:
    """Publish a new signing key.

    It signs after the publish-ahead time (AUTHSVC_KEY_PUBLISH_AHEAD, else
    AUTHSVC_JWKS_MAX_AGE), so that verifiers' JWKS caches have it first."""

    async def work(state: AppState) -> str:
        async with state.database.transaction() as db:
            await state.keys.ensure_signing_key(db, state.clock.now())
            info = await state.keys.rotate(db, state.clock.now(), actor="cli")
        return f"published {info.kid}; signs from {info.activates_at.isoformat()}"

    typer.echo(run(work))


@app.command("list", cls=Command)
def list_keys() -> None:
    """List signing keys and their state.

    States: published (not signing yet), active (signing), retired (still published until its
    last token expires)."""

    async def work(state: AppState) -> list[list[str]]:
        async with state.database.read() as db:
            infos = await state.keys.list(db, state.clock.now())
        return [
            [k.kid, k.state, when(k.created_at), when(k.activates_at), when(k.retires_at)]
            for k in infos
        ]

    table(
        ["KID", "STATE", "CREATED", "SIGNS_FROM", "RETIRES"],
        run(work),
        "no signing keys yet (the server makes the first when it starts)",
    )


@app.command("new-kek", cls=Command)
def new_kek() -> None:
    """Print a new key-encryption key.

    For AUTHSVC_KEY_ENCRYPTION_KEY. Back it up: the signing keys and refresh tokens cannot be
    read without the key they were made with."""
    from authsvc.security.secrets import new_kek as make

    typer.echo(make())
