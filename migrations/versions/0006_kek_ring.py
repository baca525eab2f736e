"""Server secrets: the HMAC keys, stored encrypted under the key-encryption key.

The table starts empty: the migration has no key-encryption key. The first process to start
fills it (services/secrets.py): on a database that earlier versions used, with the keys those
versions derived from their key-encryption key, so refresh tokens and client secrets issued
before the upgrade stay valid; on a new database, with random keys.

Revision ID: 0006_kek_ring
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from authsvc.store.models import UTCDateTime

revision: str = "0006_kek_ring"
down_revision: str | None = "0010_admin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    # The earlier version derives the HMAC keys from its key-encryption key again: refresh
    # tokens and client secrets made with random keys (a database first used by this version)
    # stop working.
    op.drop_table("server_secrets")
