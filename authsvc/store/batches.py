"""Deleting in bounded batches (what `authsvc prune` does), with a plan that holds at millions
of rows.

The batch is the first `limit` rows matching `condition` in `order` (an indexed column: the
oldest first, read straight off its index). On PostgreSQL the batch's keys are collected first,
as an array (`key = ANY(ARRAY(SELECT ...))`, an InitPlan), and the rows are then deleted by
primary key: with `key IN (SELECT ...)` the planner may hash-join the subquery against a full
scan of the table. SQLite runs the IN form, whose subquery it evaluates once the same way.
The DELETE states `condition` again: PostgreSQL re-checks it on a row changed by a transaction
that committed after the batch was read, so a row that stopped matching (a sign-up verified
meanwhile) is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Delete, Row, Table, any_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute


async def delete_batch(
    db: AsyncSession,
    table: Table,
    condition: ColumnElement[bool],
    order: ColumnElement[Any] | QueryableAttribute[Any],
    limit: int,
) -> int:
    """Delete at most `limit` rows of `table` matching `condition`, first in `order`; the
    number deleted."""
    result = await db.execute(_batch_delete(db, table, condition, order, limit))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def delete_batch_keys(
    db: AsyncSession,
    table: Table,
    condition: ColumnElement[bool],
    order: ColumnElement[Any] | QueryableAttribute[Any],
    limit: int,
) -> list[Any]:
    """As delete_batch, returning the primary keys of the rows deleted."""
    (key,) = table.primary_key.columns
    result = await db.execute(_batch_delete(db, table, condition, order, limit).returning(key))
    return list(result.scalars().all())


async def delete_batch_rows(
    db: AsyncSession,
    table: Table,
    condition: ColumnElement[bool],
    order: ColumnElement[Any] | QueryableAttribute[Any],
    limit: int,
    *columns: ColumnElement[Any] | QueryableAttribute[Any],
) -> Sequence[Row[Any]]:
    """As delete_batch, returning `columns` of the rows deleted."""
    result = await db.execute(_batch_delete(db, table, condition, order, limit).returning(*columns))
    return result.all()


def _batch_delete(
    db: AsyncSession,
    table: Table,
    condition: ColumnElement[bool],
    order: ColumnElement[Any] | QueryableAttribute[Any],
    limit: int,
) -> Delete:
    (key,) = table.primary_key.columns
    batch = select(key).where(condition).order_by(order).limit(limit)
    if db.get_bind().dialect.name == "postgresql":
        statement = delete(table).where(key == any_(func.array(batch.scalar_subquery())), condition)
    else:
        statement = delete(table).where(key.in_(batch), condition)
    return statement.execution_options(synchronize_session=False)
