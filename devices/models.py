"""Speakers, what was sent to each (deliveries), and every report they sent back."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from core.db import Base, UTCDateTime

# The delivery states live with the wire protocol; re-exported here for the server's models.
from cunxiang_shared.states import FINAL_STATES, STATE_RANK, DeliveryState  # noqa: F401


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    area_code: Mapped[str] = mapped_column(ForeignKey("regions.code"), index=True)
    model: Mapped[str] = mapped_column(String(64), default="")
    mqtt_username: Mapped[str | None] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str | None] = mapped_column(String(255))
    online: Mapped[bool] = mapped_column(default=False)
    online_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The last status heartbeat (docs/protocol.md §5.3); history in device_status.
    state: Mapped[str | None] = mapped_column(String(16))
    volume: Mapped[int | None] = mapped_column(Integer)
    fault: Mapped[str | None] = mapped_column(String(200))
    firmware: Mapped[str | None] = mapped_column(String(64))
    uptime_s: Mapped[float | None] = mapped_column(Float)
    clock_offset_s: Mapped[float | None] = mapped_column(Float)
    pending: Mapped[int | None] = mapped_column(Integer)
    rejected_total: Mapped[int] = mapped_column(Integer, default=0)
    last_rejection: Mapped[str | None] = mapped_column(String(300))
    status_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # when we received it


class Delivery(Base):
    """One occurrence as it concerns one speaker, snapshotted at dispatch."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("occurrence_id", "device_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # The scheduler's occurrence id; no foreign key, devices/ knows nothing of the scheduler.
    occurrence_id: Mapped[int] = mapped_column(Integer, index=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    area_code: Mapped[str] = mapped_column(String(12))  # the device's area at dispatch time
    state: Mapped[DeliveryState] = mapped_column(
        Enum(DeliveryState, native_enum=False, length=16), default=DeliveryState.pending
    )
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    playing_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    seconds_played: Mapped[float | None] = mapped_column(Float)  # at most duration_s
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The audio's duration as the play command said (NULL for deliveries sent before migration 0008).
    duration_s: Mapped[float | None] = mapped_column(Float)
    # The flag of a speaker's figure that exceeded the audio (a frozen player): what it reported,
    # when seconds_played was clamped to duration_s by more than report_writer.SECONDS_SLACK_S.
    seconds_reported: Mapped[float | None] = mapped_column(Float)


class DeliverySettlement(Base):
    """What an occurrence's deadline made of its deliveries, and what late reports changed since.

    At the deadline every delivery without a final report becomes `no_report` (and only then: this
    row is written with it). A final report that arrives later still counts when the speaker acted
    by the deadline — an airing it played from its local programme during an outage, reported on
    reconnect (devices.report_writer.LATE_REPORT_WINDOW_S). `revised` counts those; whatever summarised
    the occurrence before (the daily reach roll-ups) compares its own time with `revised_at`.
    """

    __tablename__ = "delivery_settlements"

    # The scheduler's occurrence id; no foreign key, as in Delivery.
    occurrence_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    settled_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the deadline
    no_report: Mapped[int] = mapped_column(Integer, default=0)  # deliveries it made no_report
    revised: Mapped[int] = mapped_column(Integer, default=0)  # of those, changed by a late final report
    revised_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the latest such change


class Report(Base):
    """Every playback report as received, kept raw for audit and later statistics: once each.

    A report is what one speaker said about one occurrence at one moment of its clock; the same
    (occurrence, device, state, at) again is a resend (QoS 1, a broker blip, a `sync`) and is not
    stored twice. seconds_played is the speaker's own figure, unclamped (the delivery holds the
    clamped one).
    """

    __tablename__ = "reports"
    __table_args__ = (
        Index(
            "uq_reports_occurrence_device_state_at",
            "occurrence_id", "device_id", "state", "reported_at",
            unique=True,
        ),
    )  # fmt: skip

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    occurrence_id: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the speaker's clock
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)  # ours
    seconds_played: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)


class DeviceStatus(Base):
    """Status history: a row when something an operator cares about changed, else every few minutes."""

    __tablename__ = "device_status"
    __table_args__ = (Index("ix_device_status_device_received", "device_id", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the speaker's clock
    online: Mapped[bool] = mapped_column(default=True)
    state: Mapped[str | None] = mapped_column(String(16))
    volume: Mapped[int | None] = mapped_column(Integer)
    fault: Mapped[str | None] = mapped_column(String(200))
    firmware: Mapped[str | None] = mapped_column(String(64))
    uptime_s: Mapped[float | None] = mapped_column(Float)
    clock_offset_s: Mapped[float | None] = mapped_column(Float)
    rejected_total: Mapped[int] = mapped_column(Integer, default=0)


class AlarmKind(enum.StrEnum):
    offline = "offline"  # online flag 0 for longer than the threshold
    failures = "failures"  # the last N airings all failed
    clock_drift = "clock_drift"  # |clock offset| above the threshold
    rejected_commands = "rejected_commands"  # the speaker refused forged/unsigned/expired commands


class DeviceAlarm(Base):
    """An alarm raised for one speaker, and when it cleared (NULL while active)."""

    __tablename__ = "device_alarms"
    __table_args__ = (Index("ix_device_alarms_active", "device_id", "kind", "cleared_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    area_code: Mapped[str] = mapped_column(String(12), index=True)
    kind: Mapped[AlarmKind] = mapped_column(Enum(AlarmKind, native_enum=False, length=32))
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    detail: Mapped[str] = mapped_column(Text, default="")


class DeviceCommand(Base):
    """A command an operator sent (set_volume, test_tone, stop, sync) to a speaker or an area."""

    __tablename__ = "device_commands"

    id: Mapped[int] = mapped_column(primary_key=True)
    cmd_id: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(8))  # device | area
    target: Mapped[str] = mapped_column(String(64), index=True)  # device id or area code
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    targeted: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text)


class DeviceCommandResult(Base):
    """One speaker's answer to an operator command, from its status (`commands`)."""

    __tablename__ = "device_command_results"
    __table_args__ = (UniqueConstraint("command_id", "device_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    command_id: Mapped[int] = mapped_column(ForeignKey("device_commands.id"), index=True)
    device_id: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())  # the speaker's clock
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
