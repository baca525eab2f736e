"""Authorization codes (RFC 6749 section 4.1) and the time a session's user authenticated.

Codes are kept only as keyed digests, one row each, spent by a compare-and-set on `used_at`;
`session_id` is the session the exchange opened, revoked if the code is presented again.
`sessions.auth_time` is the OpenID Connect `auth_time` of a session's ID tokens (NULL for
sessions opened before this revision).

Revision ID: 0006_authorization_codes
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from authsvc.store.models import UTCDateTime

revision: str = "0006_authorization_codes"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "authorization_codes",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column(
            "user_id",
            sa.Uuid(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("code_challenge", sa.String(128), nullable=True),
        sa.Column("scope", sa.String(512), nullable=False),
        sa.Column("nonce", sa.String(512), nullable=True),
        sa.Column("auth_time", UTCDateTime(), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.UniqueConstraint("digest", name="uq_authorization_codes_digest"),
    )
    op.create_index("ix_authorization_codes_expires_at", "authorization_codes", ["expires_at"])
    # Deleting a user deletes its codes (ON DELETE CASCADE): without this, a scan per user.
    op.create_index("ix_authorization_codes_user_id", "authorization_codes", ["user_id"])
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("auth_time", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("auth_time")
    op.drop_index("ix_authorization_codes_user_id", table_name="authorization_codes")
    op.drop_index("ix_authorization_codes_expires_at", table_name="authorization_codes")
    op.drop_table("authorization_codes")
