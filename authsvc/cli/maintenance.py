"""`authsvc migrate` and `authsvc prune`: the database's upkeep."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from authsvc.cli import preflight
from authsvc.cli.output import positive
from authsvc.cli.runner import run
from authsvc.cli.runner import settings as load

if TYPE_CHECKING:
    from authsvc.cli.runner import AppState


def migrate() -> None:
    """Migrate the database schema to this version.

    Run it before rolling out an upgrade; the embedded SQLite database migrates itself."""
    from authsvc.store.db import head_revision, upgrade

    settings = load()
    asyncio.run(preflight.check(settings, will_migrate=True))
    upgrade(settings.resolved_database_url)
    typer.echo(f"database at revision {head_revision()}")


def prune(
    batch: Annotated[
        int | None,
        typer.Option(
            callback=positive,
            metavar="ROWS",
            help="Rows deleted per transaction.  [default: AUTHSVC_PRUNE_BATCH, else 1000]",
        ),
    ] = None,
) -> None:
    """Delete expired rows.

    Denylist entries, refresh tokens, sessions, retired signing keys, old revocation-feed
    entries, self sign-ups unverified past AUTHSVC_UNVERIFIED_SIGNUP_TTL, and audit events past
    AUTHSVC_AUDIT_RETENTION_DAYS."""
    from authsvc.services.maintenance import prune as run_prune

    async def work(state: AppState) -> str:
        size = batch or state.settings.prune_batch
        report = await run_prune(state.database, state.keys, state.clock.now(), size)
        return (
            f"pruned denylist={report.denylist} refresh_tokens={report.refresh_tokens} "
            f"sessions={report.sessions} signing_keys={report.signing_keys} "
            f"revocation_events={report.revocation_events} audit_events={report.audit_events} "
            f"authorization_codes={report.authorization_codes}"
            f" account_tokens={report.account_tokens}"
            f" mfa_challenges={report.mfa_challenges}"
            f" passkey_challenges={report.passkey_challenges}"
            f" unverified_signups={report.unverified_signups}"
        )

    typer.echo(run(work))
