"""Running one unit of CLI work against the configured database, with the app's services."""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from authsvc.cli import preflight
from authsvc.cli.errors import CliError
from authsvc.config import Settings, load_settings

if TYPE_CHECKING:
    # The one place the CLI names where the app's state lives.
    from authsvc.state import AppState as AppState

T = TypeVar("T")


def settings() -> Settings:
    """The settings; a ConfigError is reported by the root group (cli/errors.py)."""
    return load_settings()


async def open_state(config: Settings, *, migrate: bool = True) -> AppState:
    """The app's services over a database that answers and is migrated to head (the embedded
    SQLite database migrates itself first, as `serve` does)."""
    from authsvc.state import build_state  # here, so that --help does not load the app

    await preflight.check(config, migrate_first=migrate)
    state = build_state(config)
    try:
        await state.secrets.load(state.database, state.clock.now())
    except BaseException:
        await state.database.dispose()
        raise
    return state


def run(work: Callable[[AppState], Awaitable[T]], *, migrate: bool = True) -> T:
    config = settings()

    async def main() -> T:
        state = await open_state(config, migrate=migrate)
        try:
            return await work(state)
        finally:
            await state.database.dispose()

    return asyncio.run(main())


def read_password(from_stdin: bool, confirm: bool = True) -> str:
    """The password from standard input, or typed twice on the terminal; never a prompt that
    cannot be answered (getpass would read a pipe with a warning, or wait on /dev/tty)."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        raise CliError(
            "no terminal to ask for the password on",
            "pipe it in with --password-stdin (printf '%s\\n' \"$PASSWORD\" | authsvc ...)",
        )
    else:
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Repeat password: ") != password:
            raise CliError("the passwords do not match")
    if not password:
        raise CliError("empty password")
    return password


def confirm(question: str, *, yes: bool) -> None:
    """Go on if `yes` (--yes) or the operator says so on the terminal; refuse otherwise."""
    import typer

    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError("not confirmed", "pass --yes to confirm without a terminal")
    if not typer.confirm(question, default=False):
        raise CliError("not confirmed", code=1)
