"""Read-only views of the speaker fleet for the console: one speaker's history (counts per area
are devices.fleet.health's)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from devices.models import Delivery, Device
from scheduler.models import Broadcast, Occurrence


@dataclass(frozen=True)
class HistoryRow:
    broadcast_id: int
    title: str
    start_at: datetime
    state: str
    seconds_played: float | None
    error: str | None


def device_history(*, session: Session, device_id: str, limit: int = 50) -> list[HistoryRow]:
    """The speaker's latest deliveries (what it was sent and what it reported), newest first."""
    rows = session.execute(
        select(Broadcast.id, Broadcast.title, Occurrence.start_at, Delivery.state, Delivery.seconds_played,
               Delivery.error)
        .join(Occurrence, Occurrence.id == Delivery.occurrence_id)
        .join(Broadcast, Broadcast.id == Occurrence.broadcast_id)
        .where(Delivery.device_id == device_id)
        .order_by(Occurrence.start_at.desc())
        .limit(limit)
    ).all()  # fmt: skip
    return [HistoryRow(*r) for r in rows]


def get_device(*, session: Session, device_id: str) -> Device | None:
    """The speaker, or None."""
    return session.get(Device, device_id)
