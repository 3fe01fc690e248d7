"""fleet: speaker status (current and history), alarms, operator commands and their results

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-25 12:48:21

Revises 0002, the head when it was written (the chain is 0001 -> 0003 -> 0002 -> 0004).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_alarms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("area_code", sa.String(length=12), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "offline",
                "failures",
                "clock_drift",
                "rejected_commands",
                name="alarmkind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("raised_at", core.db.UTCDateTime(), nullable=False),
        sa.Column("cleared_at", core.db.UTCDateTime(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_alarms_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_alarms")),
    )
    with op.batch_alter_table("device_alarms", schema=None) as batch_op:
        batch_op.create_index("ix_device_alarms_active", ["device_id", "kind", "cleared_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_device_alarms_area_code"), ["area_code"], unique=False)

    op.create_table(
        "device_commands",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cmd_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", core.db.UTCDateTime(), nullable=False),
        sa.Column("expires_at", core.db.UTCDateTime(), nullable=False),
        sa.Column("targeted", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_device_commands_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_commands")),
        sa.UniqueConstraint("cmd_id", name=op.f("uq_device_commands_cmd_id")),
    )
    with op.batch_alter_table("device_commands", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_commands_target"), ["target"], unique=False)

    op.create_table(
        "device_status",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", core.db.UTCDateTime(), nullable=False),
        sa.Column("reported_at", core.db.UTCDateTime(), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=True),
        sa.Column("volume", sa.Integer(), nullable=True),
        sa.Column("fault", sa.String(length=200), nullable=True),
        sa.Column("firmware", sa.String(length=64), nullable=True),
        sa.Column("uptime_s", sa.Float(), nullable=True),
        sa.Column("clock_offset_s", sa.Float(), nullable=True),
        sa.Column("rejected_total", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_status_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_status")),
    )
    with op.batch_alter_table("device_status", schema=None) as batch_op:
        batch_op.create_index("ix_device_status_device_received", ["device_id", "received_at"], unique=False)

    op.create_table(
        "device_command_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("command_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("at", core.db.UTCDateTime(), nullable=False),
        sa.Column("received_at", core.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["command_id"],
            ["device_commands.id"],
            name=op.f("fk_device_command_results_command_id_device_commands"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_command_results")),
        sa.UniqueConstraint("command_id", "device_id", name=op.f("uq_device_command_results_command_id")),
    )
    with op.batch_alter_table("device_command_results", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_command_results_command_id"), ["command_id"], unique=False
        )

    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("volume", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("fault", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("firmware", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("uptime_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("clock_offset_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("pending", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rejected_total", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("last_rejection", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("status_at", core.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("status_at")
        batch_op.drop_column("last_rejection")
        batch_op.drop_column("rejected_total")
        batch_op.drop_column("pending")
        batch_op.drop_column("clock_offset_s")
        batch_op.drop_column("uptime_s")
        batch_op.drop_column("firmware")
        batch_op.drop_column("fault")
        batch_op.drop_column("volume")
        batch_op.drop_column("state")

    with op.batch_alter_table("device_command_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_command_results_command_id"))

    op.drop_table("device_command_results")
    with op.batch_alter_table("device_status", schema=None) as batch_op:
        batch_op.drop_index("ix_device_status_device_received")

    op.drop_table("device_status")
    with op.batch_alter_table("device_commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_commands_target"))

    op.drop_table("device_commands")
    with op.batch_alter_table("device_alarms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_alarms_area_code"))
        batch_op.drop_index("ix_device_alarms_active")

    op.drop_table("device_alarms")
