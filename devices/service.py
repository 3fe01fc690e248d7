"""Speaker registry and delivery snapshots: who the speakers are, what each occurrence was sent to.

Playback reports are applied to the deliveries by devices.report_writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.orm import Session

from core import errors, regions
from core.clock import utcnow
from core.models import Region, RegionLevel
from cunxiang_shared import protocol
from devices import fleet, report_writer
from devices.models import FINAL_STATES, Delivery, DeliverySettlement, DeliveryState, Device, DeviceStatus


class DeviceError(errors.InvalidInput):
    """A device request that cannot be carried out as given; `field` names the input at fault."""


def get(*, session: Session, device_id: str) -> Device | None:
    """Return the device with this id, or None."""
    return session.get(Device, device_id)


def register(*, session: Session, device_id: str, name: str, area_code: str, model: str = "") -> Device:
    """Add a speaker to the registry (or update its name, area and model)."""
    if not protocol.DEVICE_ID_RE.match(device_id):
        raise DeviceError("id", f"device id {device_id!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    if session.get(Region, area_code) is None:
        raise DeviceError("area_code", f"unknown area code {area_code}")
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


def snapshot_deliveries(
    *, session: Session, occurrence_id: int, devices: Iterable[Device], duration_s: float | None = None
) -> int:
    """Record one pending delivery per target speaker of an occurrence (its audio lasting
    duration_s, the bound of seconds_played); return how many."""
    now = utcnow()
    rows = [
        {
            "occurrence_id": occurrence_id,
            "device_id": d.id,
            "area_code": d.area_code,
            "state": DeliveryState.pending,
            "updated_at": now,
            "duration_s": duration_s,
        }
        for d in devices
    ]
    if rows:
        session.execute(insert(Delivery), rows)
    return len(rows)


def finalize_deliveries(*, session: Session, occurrence_id: int, at: datetime) -> int:
    """Deliveries still without a final report become no_report; return how many.

    The only way a delivery becomes `no_report`: the settlement it records tells the report writer
    where a late final report may still change one (report_writer.LATE_REPORT_WINDOW_S).
    """
    result = session.execute(
        update(Delivery)
        .where(Delivery.occurrence_id == occurrence_id, Delivery.state.not_in(list(FINAL_STATES)))
        .values(state=DeliveryState.no_report, finished_at=at, updated_at=utcnow())
    )
    n = result.rowcount or 0
    if n:
        statement = report_writer.upsert(session)(DeliverySettlement).values(
            occurrence_id=occurrence_id, settled_at=at, no_report=n, revised=0
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[DeliverySettlement.occurrence_id],
                set_={
                    "settled_at": statement.excluded.settled_at,
                    "no_report": DeliverySettlement.no_report + statement.excluded.no_report,
                },
            )
        )
    return n


def set_online(*, session: Session, device_id: str, online: bool, at: datetime) -> bool:
    """Record a speaker's online flag; False when the device is unknown."""
    return set_online_many(session=session, flags={device_id: (online, at)}) == 0


def set_online_many(*, session: Session, flags: Mapping[str, tuple[bool, datetime]]) -> int:
    """Record speakers' online flags (device id -> (online, when)); return how many devices were
    unknown. A transition (or a first flag) sets `online_changed_at` and adds a history row (so
    "offline since" has a record); every flag sets `last_seen_at`.

    One query loads the devices, the flush writes them, and the history rows of the transitions
    go in as one multi-row INSERT (the ORM inserts them one by one on SQLite, to read back ids).
    """
    if not flags:
        return 0
    devices = {d.id: d for d in session.scalars(select(Device).where(Device.id.in_(list(flags))))}
    history = []
    for device_id, (online, at) in flags.items():
        device = devices.get(device_id)
        if device is None:
            continue
        if device.online != online or device.online_changed_at is None:
            device.online, device.online_changed_at = online, at
            history.append(fleet.online_change_row(device=device, online=online, at=at))
        device.last_seen_at = at
    if history:
        session.execute(insert(DeviceStatus), history)
    return len(flags) - len(devices)


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
