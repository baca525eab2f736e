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


@app.command("rewrap", cls=Command)
def rewrap() -> None:
    """Re-encrypt everything stored under a previous key-encryption key with the current one.

    The signing keys' private parts and the server's HMAC keys: whatever was written under a
    key in AUTHSVC_PREVIOUS_KEY_ENCRYPTION_KEYS is re-encrypted under
    AUTHSVC_KEY_ENCRYPTION_KEY, one line per item. Afterwards the previous keys can be
    removed. Nothing is written if anything cannot be decrypted (exit 2)."""

    async def work(state: AppState) -> list[str]:
        async with state.database.transaction() as db:
            report = await state.secrets.rewrap(db, state.clock.now(), actor="cli")
        lines = [f"rewrapped {what}" for what in report.rewrapped]
        lines += [f"already under the current key: {what}" for what in report.current]
        lines.append(
            f"{len(report.rewrapped)} rewrapped, {len(report.current)} already current; "
            "nothing stored needs a previous key-encryption key now"
        )
        return lines

    for line in run(work):
        typer.echo(line)


@app.command("new-kek", cls=Command)
def new_kek() -> None:
    """Print a new key-encryption key.

    For AUTHSVC_KEY_ENCRYPTION_KEY. Back it up: the signing keys and the server's HMAC keys
    cannot be read without a key they were written under (see `keys rewrap`)."""
    from authsvc.security.secrets import new_kek as make

    typer.echo(make())
