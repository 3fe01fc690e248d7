"""Fleet health: speakers' status into the database (with bounded history), alarms, roll-ups by
area, and operator commands (set_volume, test_tone, stop, sync) with their recorded outcome."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core import regions
from core.clock import utcnow
from core.errors import InvalidInput, NotFound
from core.models import Region, RegionLevel
from cunxiang_shared import protocol
from devices.commands import CommandSender
from devices.models import (
    FINAL_STATES,
    AlarmKind,
    Delivery,
    DeliveryState,
    Device,
    DeviceAlarm,
    DeviceCommand,
    DeviceCommandResult,
    DeviceStatus,
)

log = logging.getLogger(__name__)

# A status history row is written when state, volume, fault, firmware or the rejection count
# change, when the clock offset moves by more than CLOCK_CHANGE_S, and otherwise at most this often.
STATUS_HISTORY_INTERVAL_S = 600.0
CLOCK_CHANGE_S = 5.0
# An online speaker whose last status is older than this many heartbeats is counted "silent".
SILENT_AFTER_S = 3 * 60.0
# Final airings looked at for the "repeated failures" alarm.
FAILURE_LOOKBACK = timedelta(days=2)

COMMAND_TYPES = ("set_volume", "test_tone", "stop", "sync")


class FleetError(InvalidInput):
    """An operator command that cannot be built as asked; `field` names the offending input."""

    def __init__(self, message: str, *, field: str = "type") -> None:
        super().__init__(field, message)


# ---------------------------------------------------------------- status ingestion


def _changed(device: Device, status: protocol.Status, rejected_total: int) -> bool:
    if (device.state, device.volume, device.fault, device.firmware) != (
        status.state,
        status.volume,
        status.fault,
        status.firmware,
    ):
        return True
    if rejected_total != (device.rejected_total or 0):
        return True
    old, new = device.clock_offset_s, status.clock_offset_s
    if (old is None) != (new is None):
        return True
    return old is not None and new is not None and abs(old - new) > CLOCK_CHANGE_S


def apply_statuses(
    *, session: Session, statuses: Mapping[str, tuple[protocol.Status, datetime]]
) -> tuple[int, int]:
    """Record the latest status of each device (and history when due); return (applied, unknown)."""
    if not statuses:
        return 0, 0
    devices = {d.id: d for d in session.scalars(select(Device).where(Device.id.in_(list(statuses)))).all()}
    last_history = dict(
        session.execute(
            select(DeviceStatus.device_id, func.max(DeviceStatus.received_at))
            .where(DeviceStatus.device_id.in_(list(devices)))
            .group_by(DeviceStatus.device_id)
        ).all()
    )
    history = []
    results: list[tuple[str, protocol.CommandResult, datetime]] = []
    for device_id, (status, arrived) in statuses.items():
        device = devices.get(device_id)
        if device is None:
            continue
        rejected_total = sum((status.rejected or {}).values())
        last = last_history.get(device_id)
        if (
            _changed(device, status, rejected_total)
            or last is None
            or ((arrived - last).total_seconds() >= STATUS_HISTORY_INTERVAL_S)
        ):
            history.append(
                DeviceStatus(
                    device_id=device_id,
                    received_at=arrived,
                    reported_at=status.at,
                    online=True,
                    state=status.state,
                    volume=status.volume,
                    fault=status.fault,
                    firmware=status.firmware,
                    uptime_s=status.uptime_s,
                    clock_offset_s=status.clock_offset_s,
                    rejected_total=rejected_total,
                )  # fmt: skip
            )
        device.state, device.volume, device.fault = status.state, status.volume, status.fault
        device.firmware, device.uptime_s = status.firmware, status.uptime_s
        device.clock_offset_s, device.pending = status.clock_offset_s, status.pending
        device.rejected_total = rejected_total
        if status.last_rejection is not None:
            r = status.last_rejection
            device.last_rejection = f"{r.at.isoformat()} {r.reason}: {r.detail}"[:300]
        device.status_at = arrived
        device.last_seen_at = arrived
        results += [(device_id, result, arrived) for result in status.commands or []]
    session.add_all(history)
    _record_results(session, results)
    session.flush()
    return len(devices), len(statuses) - len(devices)


def _record_results(
    session: Session, results: Sequence[tuple[str, protocol.CommandResult, datetime]]
) -> None:
    if not results:
        return
    commands = dict(
        session.execute(
            select(DeviceCommand.cmd_id, DeviceCommand.id).where(
                DeviceCommand.cmd_id.in_({r.cmd_id for _, r, _ in results})
            )
        ).all()
    )
    if not commands:
        return
    existing = set(
        session.execute(
            select(DeviceCommandResult.command_id, DeviceCommandResult.device_id).where(
                DeviceCommandResult.command_id.in_(list(commands.values()))
            )
        ).all()
    )
    for device_id, result, arrived in results:
        command_id = commands.get(result.cmd_id)
        if command_id is None or (command_id, device_id) in existing:
            continue
        existing.add((command_id, device_id))
        session.add(
            DeviceCommandResult(
                command_id=command_id,
                device_id=device_id,
                ok=result.ok,
                error=result.error,
                at=result.at,
                received_at=arrived,
            )  # fmt: skip
        )


def online_change_row(*, device: Device, online: bool, at: datetime) -> dict:
    """The history row (DeviceStatus columns) for an online/offline transition (so "offline since"
    has a record)."""
    return {
        "device_id": device.id,
        "received_at": at,
        "online": online,
        "state": device.state if online else None,
        "volume": device.volume,
        "fault": device.fault,
        "firmware": device.firmware,
        "clock_offset_s": device.clock_offset_s,
        "rejected_total": device.rejected_total or 0,
    }


# ---------------------------------------------------------------- alarms


@dataclass(frozen=True)
class AlarmRules:
    """Thresholds of the alarms (from settings.devices)."""

    offline_after_s: float = 600.0
    clock_drift_s: float = 30.0
    failures_in_a_row: int = 3


@dataclass
class AlarmChanges:
    raised: list[tuple[str, str]] = field(default_factory=list)  # (device id, kind)
    cleared: list[tuple[str, str]] = field(default_factory=list)


def _failing_devices(session: Session, now: datetime, n: int) -> dict[str, str]:
    """Devices whose last n final airings (in the lookback) all failed, with the last error."""
    rows = session.execute(
        select(Delivery.device_id, Delivery.state, Delivery.error)
        .where(
            Delivery.finished_at >= now - FAILURE_LOOKBACK,
            Delivery.state.in_([s for s in FINAL_STATES if s != DeliveryState.no_report]),
        )
        .order_by(Delivery.device_id, Delivery.finished_at.desc())
    ).all()
    streak: Counter[str] = Counter()
    broken: set[str] = set()
    last_error: dict[str, str] = {}
    for device_id, state, error in rows:
        if device_id in broken:
            continue
        if state == DeliveryState.failed and (error or "") != "stopped by server":
            streak[device_id] += 1
            last_error.setdefault(device_id, error or "")
        else:
            broken.add(device_id)
    return {d: last_error[d] for d, count in streak.items() if count >= n}


def evaluate_alarms(*, session: Session, rules: AlarmRules, now: datetime | None = None) -> AlarmChanges:
    """Raise and clear alarms for every device; each kind is active at most once per device."""
    now = now or utcnow()
    changes = AlarmChanges()
    active = {
        (a.device_id, a.kind): a
        for a in session.scalars(select(DeviceAlarm).where(DeviceAlarm.cleared_at.is_(None))).all()
    }
    should: dict[tuple[str, AlarmKind], tuple[str, str]] = {}  # (device, kind) -> (area, detail)
    offline_before = now - timedelta(seconds=rules.offline_after_s)
    for device_id, area, since in session.execute(
        select(Device.id, Device.area_code, Device.online_changed_at).where(
            Device.online.is_(False),
            Device.online_changed_at.is_not(None),
            Device.online_changed_at <= offline_before,
        )  # fmt: skip
    ).all():
        should[(device_id, AlarmKind.offline)] = (area, f"offline since {since.isoformat()}")
    for device_id, area, offset in session.execute(
        select(Device.id, Device.area_code, Device.clock_offset_s).where(
            func.abs(Device.clock_offset_s) > rules.clock_drift_s
        )
    ).all():
        should[(device_id, AlarmKind.clock_drift)] = (
            area,
            f"clock off by {-offset:+.1f} s (server minus speaker {offset:+.1f} s)",
        )
    failing = _failing_devices(session, now, rules.failures_in_a_row)
    if failing:
        areas = dict(session.execute(select(Device.id, Device.area_code).where(Device.id.in_(failing))).all())
        for device_id, error in failing.items():
            should[(device_id, AlarmKind.failures)] = (
                areas[device_id],
                f"last {rules.failures_in_a_row} airings failed; last error: {error}"[:500],
            )
    # Rejected commands: raised while the count grows; cleared once the count has not moved
    # for the offline threshold (a quiet period), judged from the status history.
    for device_id, area, total, detail in session.execute(
        select(Device.id, Device.area_code, Device.rejected_total, Device.last_rejection).where(
            Device.rejected_total > 0
        )
    ).all():
        grew_at = session.scalar(
            select(func.min(DeviceStatus.received_at)).where(
                DeviceStatus.device_id == device_id, DeviceStatus.rejected_total == total
            )
        )
        if grew_at is not None and grew_at > offline_before:
            should[(device_id, AlarmKind.rejected_commands)] = (area, f"{total} refused; last: {detail}")
        elif (device_id, AlarmKind.rejected_commands) in active:
            pass  # quiet long enough: cleared below
    for key, (area, detail) in should.items():
        alarm = active.get(key)
        if alarm is None:
            session.add(
                DeviceAlarm(device_id=key[0], area_code=area, kind=key[1], raised_at=now, detail=detail)
            )
            changes.raised.append((key[0], key[1].value))
            log.warning("alarm raised: %s %s: %s", key[0], key[1].value, detail)
        elif key[1] != AlarmKind.offline:
            alarm.detail = detail
    for key, alarm in active.items():
        if key not in should:
            alarm.cleared_at = now
            changes.cleared.append((key[0], key[1].value))
            log.info("alarm cleared: %s %s", key[0], key[1].value)
    session.flush()
    return changes


def list_alarms(
    *, session: Session, area_code: str | None, active: bool | None, limit: int, offset: int
) -> tuple[list[DeviceAlarm], int]:
    """Alarms under an area, newest first, optionally only active (or only cleared) ones."""
    query = select(DeviceAlarm)
    if area_code:
        query = query.where(DeviceAlarm.area_code.startswith(regions.code_prefix(area_code)))
    if active is True:
        query = query.where(DeviceAlarm.cleared_at.is_(None))
    elif active is False:
        query = query.where(DeviceAlarm.cleared_at.is_not(None))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(
        query.order_by(DeviceAlarm.raised_at.desc(), DeviceAlarm.id.desc()).limit(limit).offset(offset)
    ).all()
    return list(items), total


# ---------------------------------------------------------------- roll-up


@dataclass
class AreaHealth:
    code: str
    name: str
    level: str
    devices: int = 0
    online: int = 0
    offline: int = 0
    never_connected: int = 0
    playing: int = 0
    faulted: int = 0
    silent: int = 0
    alarmed: int = 0

    @property
    def online_rate(self) -> float | None:
        return round(self.online / self.devices, 4) if self.devices else None


def health(
    *, session: Session, area_code: str | None, now: datetime | None = None
) -> tuple[AreaHealth, list[AreaHealth]]:
    """Totals for an area (all areas when None) and one line per child area (townships or villages)."""
    now = now or utcnow()
    if area_code is None:
        root = AreaHealth(code="", name="全部", level="all")
        depth = 0  # children are counties
    else:
        region = session.get(Region, area_code)
        if region is None:
            raise NotFound(f"unknown area code {area_code}")
        root = AreaHealth(code=region.code, name=region.name, level=region.level.value)
        depth = len(regions.chain(area_code))
    query = select(
        Device.id, Device.area_code, Device.online, Device.online_changed_at, Device.state,
        Device.fault, Device.status_at,
    )  # fmt: skip
    if area_code:
        query = query.where(Device.area_code.startswith(regions.code_prefix(area_code)))
    alarmed = set(
        session.scalars(select(DeviceAlarm.device_id).where(DeviceAlarm.cleared_at.is_(None))).all()
    )
    children: dict[str, AreaHealth] = {}
    silent_before = now - timedelta(seconds=SILENT_AFTER_S)
    for device_id, area, online, changed, state, fault, status_at in session.execute(query).all():
        chain = regions.chain(area)
        child_code = chain[depth] if len(chain) > depth else area
        child = children.get(child_code)
        if child is None:
            child = children[child_code] = AreaHealth(code=child_code, name="", level="")
        for line in (root, child):
            line.devices += 1
            if online:
                line.online += 1
                line.playing += state == "playing"
                line.silent += status_at is None or status_at < silent_before
            else:
                line.offline += 1
                line.never_connected += changed is None
            line.faulted += fault is not None
            line.alarmed += device_id in alarmed
    names = {r.code: r for r in session.scalars(select(Region).where(Region.code.in_(list(children)))).all()}
    for code, line in children.items():
        region = names.get(code)
        line.name = region.name if region else code
        line.level = region.level.value if region else ""
        if code == area_code:
            line.name += "（本级）"
    return root, [children[c] for c in sorted(children)]


# ---------------------------------------------------------------- operator commands


def build_command(kind: str, params: Mapping[str, object]) -> protocol.AnyCommand:
    """The protocol command for an operator request; FleetError on a bad type or value."""
    if kind not in COMMAND_TYPES:
        raise FleetError(f"type must be one of {', '.join(COMMAND_TYPES)}, got {kind!r}")
    try:
        return protocol.command_from({"type": kind, **{k: v for k, v in params.items() if v is not None}})
    except protocol.ProtocolError as exc:
        raise FleetError(str(exc), field="params") from None


def record_command(
    *,
    session: Session,
    command: protocol.AnyCommand,
    device_id: str | None = None,
    area_code: str | None = None,
    user_id: int | None = None,
) -> tuple[DeviceCommand, str]:
    """Record an operator command for one speaker or one area; return it and its topic.

    Commit before `publish_command`: a fast speaker's answer must find the command in the database.
    """
    if (device_id is None) == (area_code is None):
        raise FleetError("give exactly one of device_id and area_code")
    if device_id is not None:
        if session.get(Device, device_id) is None:
            raise NotFound(f"no device {device_id}")
        topic, targeted, scope, target = protocol.device_topic(device_id, "cmd"), 1, "device", device_id
    else:
        assert area_code is not None
        if session.get(Region, area_code) is None:
            raise NotFound(f"unknown area code {area_code}")
        topic, scope, target = protocol.area_command_topic(area_code), "area", area_code
        targeted = session.scalar(
            select(func.count()).where(Device.area_code.startswith(regions.code_prefix(area_code)))
        ) or 0  # fmt: skip
    params = command.model_dump(mode="json", exclude={"v", "cmd_id", "issued_at", "expires_at", "type"})
    row = DeviceCommand(
        cmd_id=command.cmd_id, type=command.type, scope=scope, target=target, params=params,
        created_by=user_id, created_at=command.issued_at, expires_at=command.expires_at, targeted=targeted,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row, topic


def publish_command(*, sender: CommandSender, command: protocol.AnyCommand, topic: str) -> None:
    """Sign and publish a recorded command (LinkError when it cannot be sent)."""
    sender.send(command, [topic])


@dataclass
class CommandOutcome:
    command: DeviceCommand
    answered: int
    succeeded: int
    failed: int
    results: list[DeviceCommandResult]

    @property
    def no_answer(self) -> int | None:
        """Speakers that did not answer, once the command has expired (None before)."""
        if utcnow() <= self.command.expires_at:
            return None
        return max(self.command.targeted - self.answered, 0)


def command_outcome(*, session: Session, command_id: int, limit: int = 1000) -> CommandOutcome | None:
    """A command with its answers so far."""
    command = session.get(DeviceCommand, command_id)
    if command is None:
        return None
    counts = dict(
        session.execute(
            select(DeviceCommandResult.ok, func.count())
            .where(DeviceCommandResult.command_id == command_id)
            .group_by(DeviceCommandResult.ok)
        ).all()
    )
    results = session.scalars(
        select(DeviceCommandResult)
        .where(DeviceCommandResult.command_id == command_id)
        .order_by(DeviceCommandResult.device_id)
        .limit(limit)
    ).all()
    ok, bad = counts.get(True, 0), counts.get(False, 0)
    return CommandOutcome(command, ok + bad, ok, bad, list(results))


def status_history(
    *, session: Session, device_id: str, limit: int, offset: int
) -> tuple[list[DeviceStatus], int]:
    """A speaker's status history, newest first."""
    query = select(DeviceStatus).where(DeviceStatus.device_id == device_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(
        query.order_by(DeviceStatus.received_at.desc(), DeviceStatus.id.desc()).limit(limit).offset(offset)
    ).all()
    return list(items), total


def county_codes(*, session: Session) -> list[str]:
    """Every county code (the topics a fleet-wide `sync` goes to)."""
    return list(session.scalars(select(Region.code).where(Region.level == RegionLevel.county)).all())
