"""TOTP second factor: secrets (encrypted), recovery codes and mfa challenges (digests), and the
authentication methods (RFC 8176 amr) of sessions and authorization codes.

Existing sessions and codes keep NULL amr, read as a password sign-in.

Revision ID: 0014_mfa
Revises: 0015_passkeys
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from authsvc.store.models import UTCDateTime

revision: str = "0014_mfa"
down_revision: str | None = "0015_passkeys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "totp_credentials",
        sa.Column(
            "user_id",
            sa.Uuid(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("secret_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("confirmed_at", UTCDateTime(), nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "recovery_codes",
        sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column(
            "user_id", sa.Uuid(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("digest", name="uq_recovery_codes_digest"),
    )
    op.create_index("ix_recovery_codes_user_id", "recovery_codes", ["user_id"])
    op.create_table(
        "mfa_challenges",
        sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column(
            "user_id", sa.Uuid(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("digest", name="uq_mfa_challenges_digest"),
    )
    op.create_index("ix_mfa_challenges_expires_at", "mfa_challenges", ["expires_at"])
    op.create_index("ix_mfa_challenges_user_id", "mfa_challenges", ["user_id"])
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("amr", sa.String(64), nullable=True))
    with op.batch_alter_table("authorization_codes") as batch:
        batch.add_column(sa.Column("amr", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("authorization_codes") as batch:
        batch.drop_column("amr")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("amr")
    op.drop_index("ix_mfa_challenges_user_id", table_name="mfa_challenges")
    op.drop_index("ix_mfa_challenges_expires_at", table_name="mfa_challenges")
    op.drop_table("mfa_challenges")
    op.drop_index("ix_recovery_codes_user_id", table_name="recovery_codes")
    op.drop_table("recovery_codes")
    op.drop_table("totp_credentials")
