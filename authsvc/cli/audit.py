"""`authsvc audit`: the audit trail, newest first."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from authsvc.cli.errors import CliError
from authsvc.cli.output import positive, table, when
from authsvc.cli.runner import run

if TYPE_CHECKING:
    from authsvc.cli.runner import AppState

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, now: datetime) -> datetime:
    """An ISO 8601 time (UTC if no zone) or a duration back from now: 90s, 30m, 12h, 7d, 2w."""
    match = _DURATION.fullmatch(value.strip())
    if match:
        return now - timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise CliError(
            f"--since: not an ISO time or a duration like 30m, 12h, 7d: {value!r}"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def audit(
    user: Annotated[
        str | None,
        typer.Option(
            "--user", metavar="NAME", help="Only events about this user (a name or an id)."
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="TIME",
            help="Only events since this ISO 8601 time, or this long ago: 30m, 12h, 7d, 2w.",
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(callback=positive, metavar="N", show_default=True, help="At most N events."),
    ] = 100,
) -> None:
    """Show the audit trail, newest first.

    Columns: time, event, user, session, client address, who acted (cli, self, scheduler),
    details as JSON."""
    import json

    from authsvc.services.admin import AuditFilter

    async def work(state: AppState) -> list[list[str]]:
        start = parse_since(since, state.clock.now()) if since else None
        async with state.database.read() as db:
            page = await state.admin.audit(db, AuditFilter(user=user, since=start), limit, None)
        return [
            [
                when(e["at"]),
                e["event"],
                e["username"] or (str(e["user_id"]) if e["user_id"] else "-"),
                str(e["session_id"]) if e["session_id"] else "-",
                e["ip"] or "-",
                e["actor"] or "-",
                json.dumps(e["details"], sort_keys=True) if e["details"] else "-",
            ]
            for e in page.events
        ]

    table(
        ["AT", "EVENT", "USER", "SESSION", "IP", "ACTOR", "DETAILS"], run(work), "no audit events"
    )
