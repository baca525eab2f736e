"""SQL for OAuth clients."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.models import OAuthClient, Session


class ClientRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def get(self, client_id: str) -> OAuthClient | None:
        return await self.db.get(OAuthClient, client_id)

    async def add(self, client: OAuthClient) -> bool:
        try:
            async with self.db.begin_nested():
                self.db.add(client)
                await self.db.flush()
        except IntegrityError:
            return False
        return True

    async def list(self) -> Sequence[OAuthClient]:
        result = await self.db.execute(select(OAuthClient).order_by(OAuthClient.created_at))
        return result.scalars().all()

    async def delete(self, client_id: str) -> bool:
        result = await self.db.execute(
            delete(OAuthClient).where(OAuthClient.client_id == client_id)
        )
        return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]

    async def set_secret_digest(self, client_id: str, digest: bytes) -> bool:
        """Replace a confidential client's secret digest; False if there is no such client or
        it is public."""
        result = await self.db.execute(
            update(OAuthClient)
            .where(OAuthClient.client_id == client_id, OAuthClient.client_type == "confidential")
            .values(secret_digest=digest)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]

    async def audiences(self) -> set[str]:
        result = await self.db.execute(
            select(OAuthClient.audience).where(OAuthClient.audience.is_not(None)).distinct()
        )
        return {a for a in result.scalars().all() if a}

    async def live_session_ids(self, client_id: str) -> Sequence[uuid.UUID]:
        result = await self.db.execute(
            select(Session.id).where(Session.client_id == client_id, Session.revoked_at.is_(None))
        )
        return list(result.scalars().all())
