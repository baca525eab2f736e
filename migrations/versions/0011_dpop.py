"""DPoP: a session (a public client's refresh tokens) may be bound to a key (RFC 9449 section 5).

Existing sessions stay unbound (NULL).

Revision ID: 0011_dpop
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_dpop"
down_revision: str | None = "0006_authorization_codes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        # The RFC 7638 thumbprint of the key (43 base64url characters).
        batch.add_column(sa.Column("dpop_jkt", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("dpop_jkt")
