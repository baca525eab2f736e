"""The revocation feed: revocation_events (denylisted jtis and revoked sids, with a cursor id).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from authsvc.store.models import BigIntPK, UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revocation_events",
        # The primary key is the cursor's index; SQLite AUTOINCREMENT never reuses an id.
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("value", sa.String(64), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_revocation_events_expires_at", "revocation_events", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_revocation_events_expires_at", table_name="revocation_events")
    op.drop_table("revocation_events")
