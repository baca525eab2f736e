"""The audit trail's queries (kept apart from repositories.py: one idea per module)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.batches import delete_batch
from authsvc.store.models import AuditEvent


class AuditRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def add(self, event: AuditEvent) -> None:
        self.db.add(event)
        await self.db.flush()

    async def find(
        self,
        *,
        user_id: uuid.UUID | None = None,
        username: str | None = None,
        event: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: tuple[datetime, int] | None = None,
        limit: int = 100,
    ) -> Sequence[AuditEvent]:
        """Newest first: by time, then id. `before` is the (at, id) of the last event of the
        previous page (keyset paging)."""
        query = select(AuditEvent)
        if user_id is not None or username is not None:
            match = []
            if user_id is not None:
                match.append(AuditEvent.user_id == user_id)
            if username is not None:
                match.append(AuditEvent.username == username)
            query = query.where(or_(*match))
        if event is not None:
            query = query.where(AuditEvent.event == event)
        if since is not None:
            query = query.where(AuditEvent.at >= since)
        if until is not None:
            query = query.where(AuditEvent.at < until)
        if before is not None:
            at, event_id = before
            query = query.where(
                or_(AuditEvent.at < at, and_(AuditEvent.at == at, AuditEvent.id < event_id))
            )
        result = await self.db.execute(
            query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
        )
        return result.scalars().all()

    async def delete_older_than(self, before: datetime, limit: int) -> int:
        table: Table = AuditEvent.__table__  # type: ignore[assignment]
        return await delete_batch(self.db, table, AuditEvent.at < before, AuditEvent.at, limit)
