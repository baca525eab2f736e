"""What the CLI prints: help pages without type annotations, and tables with a header row."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import typer
from typer.core import TyperCommand


class Command(TyperCommand):
    """A command whose help names its arguments as the usage line does (`NAME`, not
    `{name} <str>`): what an argument means is in its help text, not in its Python type."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(
                    _argument_name(param) if param.required else f"[{_argument_name(param)}]"
                )
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments = [
            (_argument_name(p), getattr(p, "help", None) or "")
            for p in self.get_params(ctx)
            if p.param_type_name == "argument" and not getattr(p, "hidden", False)
        ]
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        options = [
            record
            for p in self.get_params(ctx)
            if p.param_type_name == "option" and (record := p.get_help_record(ctx)) is not None
        ]
        if options:
            with formatter.section("Options"):
                formatter.write_dl(options)


def positive(value: int | None) -> int | None:
    """An option callback for counts: 1 or more (typer's `min=1` would print `x>=1` in help)."""
    if value is not None and value < 1:
        raise typer.BadParameter("must be 1 or more")
    return value


def _argument_name(param: Any) -> str:
    name = str(param.metavar or param.name.upper())
    return f"{name}..." if param.nargs != 1 else name


def when(value: datetime | None) -> str:
    """A time as the tables show it: ISO 8601 UTC to the second."""
    if value is None:
        return "-"
    return value.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def table(header: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> None:
    """Tab-separated rows under a header row (`cut -f` and `column -t` read them); `empty` is
    printed instead when there is no row."""
    lines = ["\t".join(cell or "-" for cell in row) for row in rows]
    if not lines:
        typer.echo(empty)
        return
    typer.echo("\t".join(header))
    for line in lines:
        typer.echo(line)


def group(description: str) -> typer.Typer:
    """A command group (`authsvc users ...`) with plain help pages."""
    return typer.Typer(help=description, no_args_is_help=True, rich_markup_mode=None)
