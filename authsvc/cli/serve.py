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
    """The server itself (limits, logging, workers) is authsvc.server's."""
    from authsvc.server import serve as run_server

    run_server(settings, host, port, workers)
