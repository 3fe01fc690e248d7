"""Broadcasts (what, where, priority) and their occurrences (when)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

import playlists.models  # noqa: F401  (broadcasts refer to playlists)
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

    @property
    def is_emergency(self) -> bool:
        """Emergency levels: two people, and quiet hours do not apply."""
        return self.value.startswith("emergency_")


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
    """draft -> submitted -> approved | rejected; approved -> scheduled -> done | cancelled."""

    draft = "draft"  # being written; nothing airs
    submitted = "submitted"  # waiting in an approver's queue
    approved = "approved"  # approved, occurrences not planned yet (a moment)
    rejected = "rejected"  # final; copy it to try again
    scheduled = "scheduled"  # occurrences planned and airing
    done = "done"  # every occurrence has passed
    cancelled = "cancelled"


# States in which a broadcast may still air or be acted on.
OPEN_STATUSES = (
    BroadcastStatus.draft,
    BroadcastStatus.submitted,
    BroadcastStatus.approved,
    BroadcastStatus.scheduled,
)


class OccurrenceStatus(enum.StrEnum):
    scheduled = "scheduled"  # waiting for its dispatch time
    dispatched = "dispatched"  # commands published, reports coming in
    done = "done"  # deadline passed, deliveries final
    missed = "missed"  # dispatch came too late (server down); never aired late
    failed = "failed"  # could not be published (broker down)
    cancelled = "cancelled"
    refused = "refused"  # inside the area's quiet hours at air time (routine only)


class Broadcast(Base):
    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    text: Mapped[str | None] = mapped_column(Text)  # a spoken notice, or None for a playlist
    playlist_id: Mapped[int | None] = mapped_column(ForeignKey("playlists.id"))
    priority: Mapped[Priority] = mapped_column(Enum(Priority, native_enum=False, length=24))
    status: Mapped[BroadcastStatus] = mapped_column(
        Enum(BroadcastStatus, native_enum=False, length=16), default=BroadcastStatus.draft, index=True
    )
    target_areas: Mapped[list[str]] = mapped_column(JSON, default=list)
    target_devices: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The narrowest area holding every target: who may see and approve it, indexed by prefix.
    scope_code: Mapped[str | None] = mapped_column(String(12), index=True)
    volume: Mapped[int | None] = mapped_column(Integer)
    # The audio that airs, fixed at submission: an approval covers exactly what was heard.
    asset_id: Mapped[int | None] = mapped_column(ForeignKey("audio_assets.id"))
    # When: a one-off start (None: as soon as approved), or a recurrence rule (JSON, see recurrence.py).
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recurrence: Mapped[dict | None] = mapped_column(JSON)
    # Occurrences exist up to here; the planner extends it as the horizon rolls on.
    planned_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    # Latest start after start_at (None: settings.scheduler.late_start_s); later airings are missed.
    late_start_s: Mapped[float | None] = mapped_column(Float)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    review_comment: Mapped[str | None] = mapped_column(Text)

    occurrences: Mapped[list[Occurrence]] = relationship(
        back_populates="broadcast", order_by="Occurrence.start_at"
    )


class Occurrence(Base):
    __tablename__ = "occurrences"
    # Planning the same rule twice (a restart, two planner ticks) never makes two airings.
    __table_args__ = (UniqueConstraint("broadcast_id", "start_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    broadcast_id: Mapped[int] = mapped_column(ForeignKey("broadcasts.id"), index=True)
    start_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())  # speakers must not start after this
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime())  # reports after this do not count
    status: Mapped[OccurrenceStatus] = mapped_column(
        Enum(OccurrenceStatus, native_enum=False, length=16), default=OccurrenceStatus.scheduled
    )
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    asset_id: Mapped[int | None] = mapped_column(Integer)  # the audio actually sent, at dispatch
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    detail: Mapped[str | None] = mapped_column(Text)

    broadcast: Mapped[Broadcast] = relationship(back_populates="occurrences")


class AuditEntry(Base):
    """Who did what to which object, when, and why: append-only."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(32))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict | None] = mapped_column(JSON)


class QuietHours(Base):
    """An area's own quiet hours (local times in the scheduler zone); areas without inherit."""

    __tablename__ = "quiet_hours"

    area_code: Mapped[str] = mapped_column(ForeignKey("regions.code"), primary_key=True)
    start: Mapped[str] = mapped_column(String(8))  # "22:00"; start == end means none
    end: Mapped[str] = mapped_column(String(8))  # "06:00"
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
