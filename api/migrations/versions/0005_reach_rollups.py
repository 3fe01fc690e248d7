"""reports: daily reach roll-ups (reach_daily) and the days rolled up (reach_days)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 13:00:00

Revises 0004, the head when it was written. Nothing to backfill: days are rolled up lazily by the
first report that covers them (reports/service.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reach_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("area_code", sa.String(length=12), nullable=False),
        sa.Column("targeted", sa.Integer(), nullable=False),
        sa.Column("played", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("no_report", sa.Integer(), nullable=False),
        sa.Column("other", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "area_code", name=op.f("pk_reach_daily")),
    )
    op.create_table(
        "reach_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("rolled_up_at", core.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_reach_days")),
    )


def downgrade() -> None:
    op.drop_table("reach_days")
    op.drop_table("reach_daily")
