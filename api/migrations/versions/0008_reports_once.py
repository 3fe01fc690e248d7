"""devices: each playback report stored once (uq_reports_occurrence_device_state_at)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 18:00:00

Revises 0007, the head when it was written. Every broker blip made speakers resend their
`received` and `playing` reports, and the raw report table stored them again (the deliveries were
right: a step only moves forward). A report is identified by its occurrence, device, state and the
speaker's time `at`: the copies already stored are removed (the first one kept), and a unique index
on those columns replaces ix_reports_occurrence_device (its columns lead the new one, so lookups by
occurrence and device still use it). The report writer inserts with ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

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


def downgrade() -> None:
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_index("uq_reports_occurrence_device_state_at")
        batch_op.create_index("ix_reports_occurrence_device", ["occurrence_id", "device_id"], unique=False)
