"""`authsvc serve`: check the set-up, then run the HTTP server."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from authsvc.cli import preflight
from authsvc.cli.output import positive
from authsvc.cli.runner import settings as load
from authsvc.config import Settings


def serve(
    host: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="Address to listen on.  [default: AUTHSVC_HOST, else 127.0.0.1]",
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(metavar="PORT", help="Port to listen on.  [default: AUTHSVC_PORT, else 8000]"),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            callback=positive,
            metavar="N",
            show_default=True,
            help="Worker processes (PostgreSQL only for more than one host).",
        ),
    ] = 1,
) -> None:
    """Start the HTTP server.

    The set-up is checked before any worker starts: the settings, that the database answers
    and is migrated (the embedded SQLite database migrates itself), and that the signing keys
    decrypt with the key-encryption key."""
    settings = load()
    asyncio.run(preflight.check(settings, will_migrate=settings.should_auto_migrate, keys=True))
    _run_server(settings, host or settings.host, port or settings.port, workers)


def _run_server(settings: Settings, host: str, port: int, workers: int) -> None:
    """Set up logging, make the development KEK and migrate when configured to (once, before
    any worker starts), then run uvicorn."""
    import logging
    import logging.config

    import uvicorn

    from authsvc.observability.logs import logging_config
    from authsvc.security.secrets import load_secrets
    from authsvc.store.db import upgrade

    log_config = logging_config(settings.resolved_log_format, settings.log_level)
    logging.config.dictConfig(log_config)
    load_secrets(settings)  # create the development KEK once, before workers race for it
    if settings.key_encryption_key is None:
        logging.getLogger("authsvc").warning(
            "development mode: signing keys are encrypted under the key-encryption key in %s; "
            "do not use this for real deployments (set AUTHSVC_ENV=production and "
            "AUTHSVC_KEY_ENCRYPTION_KEY)",
            settings.data_dir,
        )
    if settings.should_auto_migrate:
        upgrade(settings.resolved_database_url)
    if workers > 1 and settings.is_sqlite:
        typer.echo("note: SQLite is for a single host; use PostgreSQL to scale out", err=True)
    uvicorn.run(
        "authsvc.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        # Applied in every worker; authsvc.access writes the one line per request instead.
        log_config=log_config,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
