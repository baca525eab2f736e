"""`authsvc feed`: the revocation feed resource servers poll."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from authsvc.cli.output import Command, group
from authsvc.cli.runner import run

if TYPE_CHECKING:
    from authsvc.cli.runner import AppState

app = group("The revocation feed (GET /auth/revocations).")


@app.command("reset", cls=Command)
def reset() -> None:
    """Give the feed a new epoch: every poller resynchronises.

    Run it after restoring the database from a backup, or after changing the
    revocation_events table by hand. Each resource server's next poll answers with a full
    snapshot of the live revocations, then a fresh cursor; nothing is deleted."""
    from authsvc.services.revocations import reset as reset_feed

    async def work(state: AppState) -> str:
        async with state.database.transaction() as db:
            old, new = await reset_feed(db, state.clock.now())
        was = old or "missing"
        return f"feed epoch {new} (was {was}); pollers resynchronise at their next poll"

    typer.echo(run(work))
