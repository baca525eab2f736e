"""How the CLI reports a failure: one line on stderr, with a hint, and an exit code.

Every command runs inside `Group.invoke` below, so this is the one place where exceptions
become messages. Configuration and database problems (the operator's to fix) get one line and
exit 2; a refused operation (no such user, name taken) exit 1; anything else is a bug and keeps
its traceback. `--debug` or AUTHSVC_LOG_LEVEL=debug prints the traceback before the line.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from typing import Any

import typer
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from authsvc.config import ConfigError

USAGE = 2  # bad usage, configuration or database: the operator's to fix
REFUSED = 1  # the operation was refused: no such user, name taken, ...


class CliError(Exception):
    """A failure the CLI reports as `error: <message>; <hint>` and exit `code`."""

    def __init__(self, message: str, hint: str | None = None, code: int = USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code

    @property
    def line(self) -> str:
        return f"error: {self.message}" + (f"; {self.hint}" if self.hint else "")


KEK_HINT = (
    "set AUTHSVC_KEY_ENCRYPTION_KEY to the key it was written under (in development, the one "
    "in <AUTHSVC_DATA_DIR>/key-encryption-key), or keep that key in "
    "AUTHSVC_PREVIOUS_KEY_ENCRYPTION_KEYS until `authsvc keys rewrap` has run"
)
KEK_MISMATCH = CliError(
    "the signing keys in the database cannot be decrypted: no key-encryption key configured "
    "is the one they were written under",
    KEK_HINT,
)


def not_migrated(revision: str | None, head: str | None) -> CliError:
    if revision is None:
        return CliError("the database has no authsvc schema", "run `authsvc migrate`")
    return CliError(
        f"the database schema is at revision {revision}, this authsvc needs {head}",
        "run `authsvc migrate`",
    )


# pydantic's error types, said the way an operator reads them.
_SETTING_MESSAGES = {
    "int_parsing": "not an integer",
    "int_from_float": "not an integer",
    "float_parsing": "not a number",
    "bool_parsing": "not a boolean (use true or false)",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "literal_error": "must be {expected}",
    "missing": "required",
}


def _setting_problem(error: Any) -> str:
    """One pydantic error as `AUTHSVC_NAME: what is wrong`, without the input value (it may be
    a secret) or pydantic's links."""
    kind = error.get("type", "")
    context = error.get("ctx") or {}
    if kind == "value_error" and "error" in context:
        what = str(context["error"])
    elif kind in _SETTING_MESSAGES:
        what = _SETTING_MESSAGES[kind].format(**context)
    else:
        what = str(error.get("msg", "invalid value"))
    location = [str(part) for part in error.get("loc", ())]
    if not location:  # a check across settings; its message names them
        return what
    return f"AUTHSVC_{location[0].upper()}: {what}"


def _config_error(exc: ConfigError) -> CliError:
    from pydantic import ValidationError

    cause = exc.__cause__
    if isinstance(cause, ValidationError):
        message = "; ".join(_setting_problem(e) for e in cause.errors())
    else:
        message = str(exc)
    return CliError(message, "check the environment and .env")


def database_reason(exc: BaseException) -> str:
    """The driver's own words, first line only, for a database error."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _missing_schema(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", exc))
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def explain(exc: BaseException) -> CliError | None:
    """The one-line account of `exc`, or None when it is a bug (to be shown as a traceback)."""
    from cryptography.fernet import InvalidToken
    from sqlalchemy.exc import DBAPIError

    from authsvc.errors import AuthError
    from authsvc.security.secrets import UnreadableSecret

    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, UnreadableSecret):
        return CliError(str(exc), KEK_HINT)
    if isinstance(exc, ConfigError):
        return _config_error(exc)
    if isinstance(exc, AuthError):
        return CliError(exc.message, code=REFUSED)
    if isinstance(exc, InvalidToken):
        return KEK_MISMATCH
    if isinstance(exc, DBAPIError):
        if _missing_schema(exc):
            return not_migrated(None, None)
        return CliError(
            f"the database failed: {database_reason(exc)}", "--debug shows the traceback"
        )
    if isinstance(exc, OSError) and exc.filename is not None:
        return CliError(f"{exc.filename}: {exc.strerror}")
    return None


def _debugging(ctx: typer.Context) -> bool:
    if ctx.params.get("debug") or os.environ.get("AUTHSVC_LOG_LEVEL", "").lower() == "debug":
        return True
    from authsvc.config import load_settings

    try:  # AUTHSVC_LOG_LEVEL may be in .env, unless the settings are what failed
        return load_settings().log_level.lower() == "debug"
    except ConfigError:
        return False


class Group(TyperGroup):
    """The root command group: runs every command and reports its failure (see module doc)."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (TyperException, Exit, Abort):  # usage errors and exits: typer reports them
            raise
        except Exception as exc:
            problem = explain(exc)
            if problem is None:
                raise
            if _debugging(ctx):
                traceback.print_exception(exc, file=sys.stderr)
            typer.echo(problem.line, err=True)
            raise typer.Exit(problem.code) from None
