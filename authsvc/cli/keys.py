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
def rotate(
    during_kek_rotation: bool = typer.Option(
        False,
        "--during-kek-rotation",
        help="Rotate although previous key-encryption keys are configured: every process "
        "already runs with the new key-encryption key.",
    ),
) -> None:
    """Publish a new signing key.

    It signs after the publish-ahead time (AUTHSVC_KEY_PUBLISH_AHEAD, else
    AUTHSVC_JWKS_MAX_AGE), so that verifiers' JWKS caches have it first. Refused while
    AUTHSVC_PREVIOUS_KEY_ENCRYPTION_KEYS is set, unless --during-kek-rotation."""
    from authsvc.cli.errors import REFUSED, CliError
    from authsvc.errors import KekRotationUnderWay

    async def work(state: AppState) -> str:
        async with state.database.transaction() as db:
            await state.keys.ensure_signing_key(db, state.clock.now())
            info = await state.keys.rotate(
                db, state.clock.now(), actor="cli", during_kek_rotation=during_kek_rotation
            )
        return f"published {info.kid}; signs from {info.activates_at.isoformat()}"

    try:
        typer.echo(run(work))
    except KekRotationUnderWay as exc:
        raise CliError(
            "a key-encryption key rotation is under way (AUTHSVC_PREVIOUS_KEY_ENCRYPTION_KEYS "
            "is set): a signing key made now is written under the new key-encryption key, "
            "which processes still on the old settings cannot read",
            "finish the rotation first (`authsvc keys rewrap`, then remove the previous keys), "
            "or pass --during-kek-rotation once every process has the new settings",
            code=REFUSED,
        ) from exc


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
