"""What the tables need at millions of rows: an index for pruning refresh tokens, and no
cascade along refresh-token chains.

- `ix_refresh_tokens_expires_at`: `authsvc prune` deletes expired refresh tokens in batches
  (`WHERE expires_at <= now LIMIT n`); without an index each batch scans the table.
- `refresh_tokens.parent_id` no longer references `refresh_tokens.id`. With ON DELETE CASCADE,
  pruning an expired token deleted its successors too: one batch could delete a whole chain,
  live token included (a session still in use lost its refresh token), and hold its locks for
  as long. `parent_id` stays, indexed, as the chain's link (the reuse grace window follows it).

On a large PostgreSQL table the index can be built beforehand without blocking writes
(`CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_refresh_tokens_expires_at ON refresh_tokens
(expires_at)`); this revision then finds it and skips the build (docs/operations.md).

Revision ID: 0009_scale_indexes
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_scale_indexes"
down_revision: str | None = "0006_kek_ring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_refresh_tokens_expires_at", "refresh_tokens", ["expires_at"], if_not_exists=True
    )
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_constraint("fk_refresh_tokens_parent_id", type_="foreignkey")


def downgrade() -> None:
    # The link comes back only where its parent still exists (pruning may have removed it).
    op.execute(
        sa.text(
            "UPDATE refresh_tokens SET parent_id = NULL WHERE parent_id IS NOT NULL AND "
            "NOT EXISTS (SELECT 1 FROM refresh_tokens p WHERE p.id = refresh_tokens.parent_id)"
        )
    )
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.create_foreign_key(
            "fk_refresh_tokens_parent_id",
            "refresh_tokens",
            ["parent_id"],
            ["id"],
            ondelete="CASCADE",
        )
    op.drop_index("ix_refresh_tokens_expires_at", table_name="refresh_tokens")
