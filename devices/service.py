"""Speaker registry, delivery snapshots, and applying playback reports to deliveries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.orm import Session

from core import regions
from core.clock import utcnow
from core.models import Region, RegionLevel
from devices import fleet, protocol
from devices.models import (
    FINAL_STATES,
    STATE_RANK,
    Delivery,
    DeliveryState,
    Device,
)
from devices.models import (
    Report as ReportRow,
)


class DeviceError(ValueError):
    """A device request that cannot be carried out; the text says why."""


def get(*, session: Session, device_id: str) -> Device | None:
    """Return the device with this id, or None."""
    return session.get(Device, device_id)


def register(*, session: Session, device_id: str, name: str, area_code: str, model: str = "") -> Device:
    """Add a speaker to the registry (or update its name, area and model)."""
    if not protocol.DEVICE_ID_RE.match(device_id):
        raise DeviceError(f"device id {device_id!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    if session.get(Region, area_code) is None:
        raise DeviceError(f"unknown area code {area_code}")
    device = session.get(Device, device_id)
    if device is None:
        device = Device(id=device_id, name=name, area_code=area_code, model=model)
        session.add(device)
    else:
        device.name, device.area_code, device.model = name, area_code, model
    session.flush()
    return device


def list_devices(
    *,
    session: Session,
    area_code: str | None = None,
    online: bool | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Device], int]:
    """Devices under an area (all when None), optionally by online state, with the total count."""
    query = select(Device)
    if area_code:
        query = query.where(Device.area_code.startswith(regions.code_prefix(area_code)))
    if online is not None:
        query = query.where(Device.online.is_(online))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(query.order_by(Device.id).limit(limit).offset(offset)).all()
    return list(items), total


def ensure_simulated(*, session: Session, per_village: int) -> list[Device]:
    """Make sure every village has `per_village` simulated speakers; return all of them."""
    villages = session.execute(
        select(Region.code, Region.name).where(Region.level == RegionLevel.village).order_by(Region.code)
    ).all()
    wanted = {
        f"{code}-{n:02d}": (code, f"{name}{n}号喇叭")
        for code, name in villages
        for n in range(1, per_village + 1)
    }
    existing = (
        set(session.scalars(select(Device.id).where(Device.id.in_(list(wanted)))).all()) if wanted else set()
    )
    missing = [
        {
            "id": dev_id,
            "name": name,
            "area_code": code,
            "model": "simulated",
            "online": False,
            "created_at": utcnow(),
        }
        for dev_id, (code, name) in wanted.items()
        if dev_id not in existing
    ]
    if missing:
        session.execute(insert(Device), missing)
    session.flush()
    return list(session.scalars(select(Device).where(Device.id.in_(list(wanted))).order_by(Device.id)).all())


def expand_targets(*, session: Session, area_codes: Sequence[str], device_ids: Sequence[str]) -> list[Device]:
    """The speakers a broadcast reaches: everything under the areas, plus the named devices."""
    conditions = [Device.area_code.startswith(regions.code_prefix(code)) for code in area_codes]
    if device_ids:
        conditions.append(Device.id.in_(list(device_ids)))
    if not conditions:
        return []
    return list(session.scalars(select(Device).where(or_(*conditions)).order_by(Device.id)).all())


def snapshot_deliveries(*, session: Session, occurrence_id: int, devices: Iterable[Device]) -> int:
    """Record one pending delivery per target speaker of an occurrence; return how many."""
    now = utcnow()
    rows = [
        {
            "occurrence_id": occurrence_id,
            "device_id": d.id,
            "area_code": d.area_code,
            "state": DeliveryState.pending,
            "updated_at": now,
        }
        for d in devices
    ]
    if rows:
        session.execute(insert(Delivery), rows)
    return len(rows)


def finalize_deliveries(*, session: Session, occurrence_id: int, at: datetime) -> int:
    """Deliveries still without a final report become no_report; return how many."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.occurrence_id == occurrence_id, Delivery.state.not_in(list(FINAL_STATES)))
        .values(state=DeliveryState.no_report, finished_at=at, updated_at=utcnow())
    )
    return result.rowcount or 0


def set_online(*, session: Session, device_id: str, online: bool, at: datetime) -> bool:
    """Record a speaker's online flag; False when the device is unknown."""
    device = session.get(Device, device_id)
    if device is None:
        return False
    if device.online != online or device.online_changed_at is None:
        device.online, device.online_changed_at = online, at
        fleet.record_online_change(session=session, device=device, online=online, at=at)
    device.last_seen_at = at
    return True


@dataclass
class ApplyResult:
    """What a batch of reports did."""

    applied: int = 0
    unknown_device: int = 0
    unknown_delivery: int = 0
    stale: int = 0  # reports that would move a delivery backwards or after its final state
    unknown_devices: set[str] = field(default_factory=set)


def apply_reports(*, session: Session, reports: Sequence[tuple[protocol.Report, datetime]]) -> ApplyResult:
    """Store a batch of (report, arrival time) and move each delivery forward; never backwards."""
    result = ApplyResult()
    if not reports:
        return result
    device_ids = {r.device_id for r, _ in reports}
    known = set(session.scalars(select(Device.id).where(Device.id.in_(device_ids))).all())
    pairs = {(r.occurrence_id, r.device_id) for r, _ in reports if r.device_id in known}
    deliveries: dict[tuple[int, str], Delivery] = {}
    if pairs:
        occ_ids = {o for o, _ in pairs}
        rows = session.scalars(
            select(Delivery).where(
                Delivery.occurrence_id.in_(occ_ids), Delivery.device_id.in_({d for _, d in pairs})
            )
        ).all()
        deliveries = {(d.occurrence_id, d.device_id): d for d in rows}

    raw_rows = []
    for report, arrived in reports:
        if report.device_id not in known:
            result.unknown_device += 1
            result.unknown_devices.add(report.device_id)
            continue
        delivery = deliveries.get((report.occurrence_id, report.device_id))
        if delivery is None:
            result.unknown_delivery += 1
            continue
        raw_rows.append(
            {
                "device_id": report.device_id,
                "occurrence_id": report.occurrence_id,
                "state": report.state,
                "reported_at": report.at,
                "received_at": arrived,
                "seconds_played": report.seconds_played,
                "error": report.error,
            }
        )
        if _advance(delivery, report, arrived):
            result.applied += 1
        else:
            result.stale += 1
    if raw_rows:
        session.execute(insert(ReportRow), raw_rows)
    session.flush()
    return result


def _advance(delivery: Delivery, report: protocol.Report, arrived: datetime) -> bool:
    """Apply one report to its delivery; False when it changes nothing."""
    new = DeliveryState(report.state)
    current = delivery.state
    if current == DeliveryState.no_report:
        # Finalised at the deadline; a report that reached us before the deadline still counts
        # (it may have been waiting in the ingest batch when the deadline job ran).
        if new not in FINAL_STATES or delivery.finished_at is None or arrived > delivery.finished_at:
            return False
    elif STATE_RANK[new] <= STATE_RANK[current]:
        return False
    if new == DeliveryState.received or delivery.received_at is None:
        delivery.received_at = report.at
    if new == DeliveryState.playing:
        delivery.playing_at = report.at
    if new in FINAL_STATES:
        delivery.finished_at = report.at
        delivery.seconds_played = report.seconds_played
        delivery.error = report.error
    delivery.state = new
    delivery.updated_at = utcnow()
    return True


def list_deliveries(
    *,
    session: Session,
    occurrence_ids: Sequence[int],
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Delivery], int]:
    """Deliveries of some occurrences, optionally by state, with the total count."""
    query = select(Delivery).where(Delivery.occurrence_id.in_(list(occurrence_ids)))
    if state:
        query = query.where(Delivery.state == state)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(query.order_by(Delivery.device_id).limit(limit).offset(offset)).all()
    return list(items), total
