"""The revocation feed's epoch and low-water mark (feed_state, one row).

Revision ID: 0007_feed_epoch
Revises: 0004
Create Date: 2026-12-02
"""

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from authsvc.store.models import UTCDateTime

revision: str = "0007_feed_epoch"
down_revision: str | None = "0009_scale_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "feed_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("epoch", sa.String(32), nullable=False),
        sa.Column("low_water", sa.BigInteger(), nullable=False),
        sa.Column("reset_at", UTCDateTime(), nullable=False),
    )
    # A fresh identity for this database. Cursors handed out before this revision carry no
    # epoch, so their pollers resynchronise once; low_water 0 is therefore safe here.
    op.bulk_insert(
        table,
        [
            {
                "id": 1,
                "epoch": secrets.token_hex(8),
                "low_water": 0,
                "reset_at": datetime.now(UTC),
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("feed_state")
