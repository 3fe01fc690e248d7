"""Broadcasts (what, where, priority) and their occurrences (when)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Enum, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utcnow
from core.db import Base, UTCDateTime


class Priority(enum.StrEnum):
    """Higher level first, emergency before routine (GB/T emergency broadcast levels)."""

    village = "village"
    township = "township"
    county = "county"
    emergency_blue = "emergency_blue"
    emergency_yellow = "emergency_yellow"
    emergency_orange = "emergency_orange"
    emergency_red = "emergency_red"

    @property
    def rank(self) -> int:
        """Numeric priority sent to speakers: higher preempts lower."""
        return PRIORITY_RANK[self]


PRIORITY_RANK = {
    Priority.village: 10,
    Priority.township: 20,
    Priority.county: 30,
    Priority.emergency_blue: 40,
    Priority.emergency_yellow: 50,
    Priority.emergency_orange: 60,
    Priority.emergency_red: 70,
}


class BroadcastStatus(enum.StrEnum):
    scheduled = "scheduled"
    done = "done"
    cancelled = "cancelled"


class OccurrenceStatus(enum.StrEnum):
    scheduled = "scheduled"  # waiting for its dispatch time
    dispatched = "dispatched"  # commands published, reports coming in
    done = "done"  # deadline passed, deliveries final
    missed = "missed"  # dispatch came too late (server down); never aired late
    failed = "failed"  # could not be published (broker down)
    cancelled = "cancelled"


class Broadcast(Base):
    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    priority: Mapped[Priority] = mapped_column(Enum(Priority, native_enum=False, length=24))
    status: Mapped[BroadcastStatus] = mapped_column(
        Enum(BroadcastStatus, native_enum=False, length=16), default=BroadcastStatus.scheduled
    )
    target_areas: Mapped[list[str]] = mapped_column(JSON, default=list)
    target_devices: Mapped[list[str]] = mapped_column(JSON, default=list)
    volume: Mapped[int | None] = mapped_column(Integer)
    asset_id: Mapped[int] = mapped_column(ForeignKey("audio_assets.id"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    occurrences: Mapped[list[Occurrence]] = relationship(
        back_populates="broadcast", order_by="Occurrence.start_at"
    )


class Occurrence(Base):
    __tablename__ = "occurrences"

    id: Mapped[int] = mapped_column(primary_key=True)
    broadcast_id: Mapped[int] = mapped_column(ForeignKey("broadcasts.id"), index=True)
    start_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())  # speakers must not start after this
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime())  # reports after this do not count
    status: Mapped[OccurrenceStatus] = mapped_column(
        Enum(OccurrenceStatus, native_enum=False, length=16), default=OccurrenceStatus.scheduled
    )
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    detail: Mapped[str | None] = mapped_column(Text)

    broadcast: Mapped[Broadcast] = relationship(back_populates="occurrences")
