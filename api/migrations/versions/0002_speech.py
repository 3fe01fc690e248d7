"""speech: which engine made an asset, why the requested one did not, prosody asked for

Revision ID: 0002
Revises: 0003
Create Date: 2026-11-25 13:00:00

Revises 0003 (not 0001): 0003 (scheduling) was written first, and the chain must have one head.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audio_assets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requested_engine", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("fallback_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("rate", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("volume", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("pitch", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("audio_assets", schema=None) as batch_op:
        batch_op.drop_column("pitch")
        batch_op.drop_column("volume")
        batch_op.drop_column("rate")
        batch_op.drop_column("fallback_reason")
        batch_op.drop_column("requested_engine")
