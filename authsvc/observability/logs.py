"""Log formatting: one JSON object per line in production, readable text in development.

The request log (logger `authsvc.access`, one line per request) carries request id, method,
path (never the query string), status, duration and client address. Nothing that authsvc logs
carries a password, a token or a key: bodies and headers are never logged, and the loggers of
the libraries that would log them at some level (the database drivers' statements and
parameters, uvicorn's ASGI message trace) are held at a level where they do not, whatever
AUTHSVC_LOG_LEVEL says.

A logged value is partly the client's (a request path, a username): control characters in it are
escaped, so it can neither start a line of its own nor send escapes to a terminal.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any, Final

# Attributes a LogRecord always has; anything else came in through `extra=` and is a field.
# uvicorn's `color_message` (the message again, with ANSI colours) is never one.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}
)

# Loggers that print statements with their parameters (password hashes, token digests,
# addresses), or whole ASGI scopes with their headers, below these levels.
QUIET_LOGGERS: Final = {
    "aiosqlite": "INFO",
    "asyncpg": "INFO",
    "sqlalchemy": "WARNING",
    "uvicorn.asgi": "INFO",
    # Alembic's plugin registrations: noise in every worker, not start-up news.
    "alembic.runtime.plugins": "WARNING",
}

# What JSON leaves raw with ensure_ascii=False and a terminal or a line splitter still obeys:
# DEL, the C1 controls (CSI is one) and the Unicode line and paragraph separators.
_JSON_UNSAFE: Final = re.compile("[\x7f-\x9f\u2028\u2029]")


def escape(value: str) -> str:
    """`value` with every non-printable character (newlines, ESC, DEL, C1, separators) written
    as a Python escape: one logged value stays on one line and carries no terminal escapes."""
    if value.isprintable():
        return value
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value
    )


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class RequestIdFilter(logging.Filter):
    """Stamps every record written while a request is handled with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        from authsvc.observability.requests import current_request_id

        if not hasattr(record, "request_id"):
            request_id = current_request_id.get()
            if request_id is not None:
                record.request_id = request_id
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        line = json.dumps(entry, default=str, ensure_ascii=False)
        if line.isascii() and "\x7f" not in line:
            return line
        return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The one place the message (with its arguments) becomes text; the traceback is added
        # after it by format().
        record.message = escape(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line += f" request_id={escape(str(request_id))}"
        if "\n" in line:
            # A traceback (or a stack) spans lines: indent them, so that only a record's first
            # line starts at the left margin, and escape what else they carry.
            first, _, rest = line.partition("\n")
            line = first + "".join(f"\n  {escape(part)}" for part in rest.split("\n"))
        return line


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """A dictConfig for the process (handed to uvicorn, which applies it in every worker)."""
    formatter = "authsvc.observability.logs.JsonFormatter"
    if log_format != "json":
        formatter = "authsvc.observability.logs.TextFormatter"
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}, "access": {"()": formatter}},
        "filters": {"request_id": {"()": "authsvc.observability.logs.RequestIdFilter"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            # uvicorn's own loggers go through ours; its access log is replaced by authsvc.access.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            # At the stricter of their floor and the configured level (a logger's own level is
            # the only filter its records meet on their way to the root's handler).
            **{
                name: {"handlers": [], "level": _stricter(floor, level), "propagate": True}
                for name, floor in QUIET_LOGGERS.items()
            },
        },
    }


def _stricter(a: str, b: str) -> str:
    levels = logging.getLevelNamesMapping()
    return max(a, b, key=lambda name: levels.get(name, 0))
