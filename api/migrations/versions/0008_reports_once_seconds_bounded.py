"""devices: each playback report stored once; seconds_played bounded by the audio's duration

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 18:00:00

Revises 0007, the head when it was written. Every broker blip made speakers resend their
`received` and `playing` reports, and the raw report table stored them again (the deliveries were
right: a step only moves forward). A report is identified by its occurrence, device, state and the
speaker's time `at`: the copies already stored are removed (the first one kept), and a unique index
on those columns replaces ix_reports_occurrence_device (its columns lead the new one, so lookups by
occurrence and device still use it). The report writer inserts with ON CONFLICT DO NOTHING.

A frozen speaker reported 35.3 s played of 27.1 s of audio. Deliveries now keep the audio's
duration (`duration_s`, from the play command; NULL for those sent before, which stay unbounded)
and the speaker's own figure when it exceeded it (`seconds_reported`, the flag); seconds_played is
clamped to the duration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM reports WHERE id NOT IN ("
        "SELECT min(id) FROM reports GROUP BY occurrence_id, device_id, state, reported_at)"
    )
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_index("ix_reports_occurrence_device")
        batch_op.create_index(
            "uq_reports_occurrence_device_state_at",
            ["occurrence_id", "device_id", "state", "reported_at"],
            unique=True,
        )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("duration_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("seconds_reported", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("seconds_reported")
        batch_op.drop_column("duration_s")
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_index("uq_reports_occurrence_device_state_at")
        batch_op.create_index("ix_reports_occurrence_device", ["occurrence_id", "device_id"], unique=False)
