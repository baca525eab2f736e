"""Self sign-ups still waiting for their address to be verified (users.signup_pending_since),
so that housekeeping can delete the ones nobody confirms.

Existing accounts are marked only when the audit trail shows a self sign-up created them and
nothing since switched them on: still inactive, never verified, never enabled by an operator.
Any other account (made by an operator, or whose creation the audit trail no longer holds) is
left unmarked and is never deleted by housekeeping.

Revision ID: 0018_signup_origin
Revises: 0017_mfa_passkey
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from authsvc.store.models import UTCDateTime

revision: str = "0018_signup_origin"
down_revision: str | None = "0017_mfa_passkey"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("signup_pending_since", UTCDateTime(), nullable=True))
        batch.create_index("ix_users_signup_pending_since", ["signup_pending_since"])
    op.execute(
        sa.text(
            """UPDATE users SET signup_pending_since = created_at
            WHERE is_active = :off AND email_verified_at IS NULL AND email IS NOT NULL
            AND EXISTS (SELECT 1 FROM audit_events a WHERE a.user_id = users.id
                        AND a.event = 'user_created' AND a.actor = 'signup')
            AND NOT EXISTS (SELECT 1 FROM audit_events a WHERE a.user_id = users.id
                            AND a.event IN ('user_enabled', 'email_verified',
                                            'login_succeeded'))"""
        ).bindparams(off=False)
    )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_signup_pending_since")
        batch.drop_column("signup_pending_since")
