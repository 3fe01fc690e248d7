"""playlists: a text item carries the full speech settings (volume, pitch, repeat, chimes)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 10:00:00

Revises 0005, the head when it was written. Existing items get the defaults, which is what they
were synthesised with.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("playlist_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("volume", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("pitch", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("repeat", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("chime", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(
            sa.Column("closing_chime", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("playlist_items", schema=None) as batch_op:
        batch_op.drop_column("closing_chime")
        batch_op.drop_column("chime")
        batch_op.drop_column("repeat")
        batch_op.drop_column("pitch")
        batch_op.drop_column("volume")
