"""An index on `audit_events.username`: the audit trail filtered by user (`authsvc audit
--user`, `GET /admin/audit?user=`) matches rows by user id or by the recorded username, and
without it the name half of that match scans the whole table.

On a large PostgreSQL table the index can be built beforehand without blocking writes
(`CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_audit_events_username ON audit_events
(username)`); this revision then finds it and skips the build (docs/operations.md).

Revision ID: 0016_audit_username
Revises: 0014_mfa
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016_audit_username"
down_revision: str | None = "0014_mfa"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_audit_events_username", "audit_events", ["username"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_audit_events_username", table_name="audit_events")
