"""Log formatting: one JSON object per line in production, readable text in development.

The request log (logger `authsvc.access`, one line per request) carries request id, method,
path (never the query string), status, duration and client address. Nothing that authsvc logs
carries a password, a token or a key: bodies and headers are never logged.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Final

# Attributes a LogRecord always has; anything else came in through `extra=` and is a field.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
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
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if "request_id" in fields:
            line += f" request_id={fields['request_id']}"
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
        },
    }
