"""devices: what each occurrence's deadline settled, and late reports that changed it (delivery_settlements)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 22:30:00

Revises 0006, the head when it was written. A final report that arrives after an airing's deadline
now counts when the speaker acted by the deadline (断网续播, reported on reconnect). This table
says which occurrences the deadline left with `no_report` deliveries (so the report writer looks for
such changes only there) and which changed since, and when (so the daily reach roll-ups of their
days are redone). Nothing to backfill: before this revision no delivery changed after its deadline,
and a late report for an occurrence settled earlier is judged without this row (only its revision
goes unrecorded).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_settlements",
        sa.Column("occurrence_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("settled_at", core.db.UTCDateTime(), nullable=False),
        sa.Column("no_report", sa.Integer(), nullable=False),
        sa.Column("revised", sa.Integer(), nullable=False),
        sa.Column("revised_at", core.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("occurrence_id", name=op.f("pk_delivery_settlements")),
    )


def downgrade() -> None:
    op.drop_table("delivery_settlements")
