"""users: a token version, carried in tokens and console cookies, to revoke them at once

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 18:40:00

Revises 0008, the head when it was written. API tokens and console cookies stayed valid until they
expired (12 h) after logout, a password change or disabling a user. Each user now has a
`token_version` (0 for existing users); tokens and cookies carry the version they were issued
under and are refused once it has been raised. Tokens issued before this revision carry none and
are refused: everyone logs in again once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_version", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("token_version")
