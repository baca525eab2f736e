"""A passkey as the second factor: a second-factor passkey challenge names the mfa challenge
(the mfa_token) it was issued for, so that it answers that sign-in and no other.

One nullable column; existing challenges (registration, passwordless login) keep NULL.

Revision ID: 0017_mfa_passkey
Revises: 0016_audit_username
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_mfa_passkey"
down_revision: str | None = "0016_audit_username"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("passkey_challenges") as batch:
        batch.add_column(sa.Column("mfa_challenge_id", _BIGINT, nullable=True))
        batch.create_foreign_key(
            "fk_passkey_challenges_mfa_challenge_id",
            "mfa_challenges",
            ["mfa_challenge_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index("ix_passkey_challenges_mfa_challenge_id", ["mfa_challenge_id"])


def downgrade() -> None:
    with op.batch_alter_table("passkey_challenges") as batch:
        batch.drop_index("ix_passkey_challenges_mfa_challenge_id")
        batch.drop_constraint("fk_passkey_challenges_mfa_challenge_id", type_="foreignkey")
        batch.drop_column("mfa_challenge_id")
