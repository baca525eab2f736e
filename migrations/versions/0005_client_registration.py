"""Client registration for redirect-based grants: redirect URIs, allowed scopes, consent.

Existing clients keep the grant types they were registered with (each row stores its own);
only new clients get the new defaults, which leave out the password grant.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(
            sa.Column("redirect_uris", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        # NULL: any scope the server offers.
        batch.add_column(sa.Column("scopes", sa.JSON(), nullable=True))
        # Clients registered so far were registered by the operator for their own apps.
        batch.add_column(
            sa.Column("first_party", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("first_party")
        batch.drop_column("scopes")
        batch.drop_column("redirect_uris")
