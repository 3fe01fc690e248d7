"""tts: the areas whose users may air an audio asset by its id

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 19:00:00

Revises 0009, the head when it was written. A staff user bound to one township created a broadcast
and a playlist with another area's `asset_id`: only the asset's existence was checked. Assets are
shared by content (the same text and settings make one asset), so an asset can belong to several
areas: `audio_asset_areas` holds one row per (asset, area) a flow handed it to. Assets made before
this revision have none: usable by unbound users only (a bound user gets one again by previewing
the same text or uploading the same file).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audio_asset_areas",
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("area_code", sa.String(length=12), nullable=False),
        sa.ForeignKeyConstraint(["asset_id"], ["audio_assets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("asset_id", "area_code"),
    )


def downgrade() -> None:
    op.drop_table("audio_asset_areas")
