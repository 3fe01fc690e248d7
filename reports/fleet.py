"""Read-only views of the speaker fleet for the console: counts per area, one speaker's history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from core import regions
from core.models import Region
from devices.models import Delivery, Device
from scheduler.models import Broadcast, Occurrence


@dataclass(frozen=True)
class AreaCount:
    code: str
    name: str
    total: int
    online: int

    @property
    def offline(self) -> int:
        return self.total - self.online

    @property
    def online_rate(self) -> float:
        return round(self.online / self.total, 4) if self.total else 0.0


def counts_by_township(*, session: Session, area_code: str) -> list[AreaCount]:
    """Speakers and how many are online, per township under `area_code` (or the area itself)."""
    prefix = regions.code_prefix(area_code)
    township = func.substr(Device.area_code, 1, 9)
    rows = session.execute(
        select(township, func.count(), func.sum(case((Device.online.is_(True), 1), else_=0)))
        .where(Device.area_code.startswith(prefix))
        .group_by(township)
    ).all()
    codes = {f"{t}000" for t, _, _ in rows}
    names = dict(session.execute(select(Region.code, Region.name).where(Region.code.in_(codes))).all())
    return sorted(
        (AreaCount(f"{t}000", names.get(f"{t}000", f"{t}000"), n, int(up or 0)) for t, n, up in rows),
        key=lambda c: c.code,
    )


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
