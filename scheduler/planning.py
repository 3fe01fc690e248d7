"""When and where a broadcast airs: its occurrences over the rolling horizon, and the topics they go to.

Recurring broadcasts live in our own tables and are expanded into occurrences up to a rolling
horizon (`extend_horizon`, run by the runner's planner tick); a one-off gets its one occurrence
when approved (`plan_occurrences`). Airings that fell while no runner was up are planned as
`missed`, never aired late.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session

from core import regions
from core.clock import utcnow
from core.settings import SchedulerSettings, Settings
from cunxiang_shared import protocol
from devices.models import Device
from scheduler import recurrence
from scheduler.models import Broadcast, BroadcastStatus, Occurrence, OccurrenceStatus
from tts import service as tts_service

log = logging.getLogger(__name__)

# Quiet-hour checks and projections of a recurring rule cover its range, at most this far ahead.
CHECK_AHEAD = timedelta(days=366)
# The horizon is extended in steps this long, so most planner ticks change nothing.
PLAN_STEP = timedelta(hours=12)
# After a long outage, airings missed up to this long ago are still recorded as missed.
MISSED_LOOKBACK = timedelta(days=7)


def rule_of(broadcast: Broadcast) -> recurrence.Rule | None:
    return recurrence.Rule.from_dict(broadcast.recurrence) if broadcast.recurrence else None


def zone_of(settings: Settings) -> ZoneInfo:
    return ZoneInfo(settings.scheduler.timezone)


def late_start(broadcast: Broadcast, settings: Settings) -> timedelta:
    seconds = broadcast.late_start_s
    return timedelta(seconds=settings.scheduler.late_start_s if seconds is None else seconds)


def duration_ms(session: Session, broadcast: Broadcast) -> int:
    if broadcast.asset_id is None:
        return 0
    asset = tts_service.get_asset(session=session, asset_id=broadcast.asset_id)
    return asset.duration_ms if asset is not None else 0


def target_area_codes(session: Session, broadcast: Broadcast) -> list[str]:
    codes = list(broadcast.target_areas or [])
    if broadcast.target_devices:
        codes += session.scalars(
            select(Device.area_code).where(Device.id.in_(list(broadcast.target_devices)))
        ).all()
    return list(dict.fromkeys(codes))


def _occurrence_row(
    *, broadcast_id: int, start: datetime, late: timedelta, duration_ms: int, grace_s: float, now: datetime
) -> dict:
    expires = start + late
    row = {
        "broadcast_id": broadcast_id,
        "start_at": start,
        "expires_at": expires,
        "deadline_at": expires + timedelta(milliseconds=duration_ms, seconds=grace_s),
        "status": OccurrenceStatus.scheduled,
        "dispatched_at": None,
        "finalized_at": None,
        "detail": None,
    }
    if expires < now:  # planned after the fact (the server was down): reported, never aired late
        row.update(
            status=OccurrenceStatus.missed,
            finalized_at=now,
            detail=f"the scheduler was not running between {start.isoformat()} and {expires.isoformat()}",
        )
    return row


def rule_end(rule: recurrence.Rule) -> datetime | None:
    """The instant after which the rule never falls (None: open-ended)."""
    last = rule.last_date
    if last is None:
        return None
    return recurrence.local_instant(last + timedelta(days=1), datetime.min.time(), rule.zone)


def plan_occurrences(
    *, session: Session, settings: Settings, broadcast: Broadcast, now: datetime
) -> list[Occurrence]:
    """Create the occurrences of a just-approved broadcast up to the horizon; return them."""
    sched = settings.scheduler
    late, duration = late_start(broadcast, settings), duration_ms(session, broadcast)
    rule = rule_of(broadcast)
    if rule is None:
        starts = [broadcast.start_at or now + timedelta(seconds=sched.lead_time_s)]
        until = starts[0]
    else:
        until = now + timedelta(hours=sched.horizon_hours) + PLAN_STEP
        starts = recurrence.expand(rule, now, until)
    created = []
    for start in starts:
        row = _occurrence_row(
            broadcast_id=broadcast.id, start=start, late=late, duration_ms=duration,
            grace_s=sched.report_grace_s, now=now,
        )  # fmt: skip
        occ = Occurrence(**{k: v for k, v in row.items() if k != "broadcast_id"})
        broadcast.occurrences.append(occ)
        created.append(occ)
    broadcast.planned_until = until
    session.flush()
    return created


def extend_horizon(*, session: Session, settings: Settings, now: datetime | None = None) -> int:
    """Plan occurrences of every scheduled recurring broadcast up to the rolling horizon.

    Airings that fell while the scheduler was down are planned as `missed` (never aired late).
    Bulk statements, so starting with thousands of broadcasts stays proportional to their number.
    Returns how many occurrences were created.
    """
    from tts.models import AudioAsset  # the asset's length decides each occurrence's deadline

    now = now or utcnow()
    sched = settings.scheduler
    horizon = now + timedelta(hours=sched.horizon_hours)
    rows = session.execute(
        select(
            Broadcast.id, Broadcast.recurrence, Broadcast.planned_until, Broadcast.late_start_s,
            AudioAsset.duration_ms,
        )
        .outerjoin(AudioAsset, AudioAsset.id == Broadcast.asset_id)
        .where(
            Broadcast.status == BroadcastStatus.scheduled,
            Broadcast.recurrence.is_not(None),
            or_(Broadcast.planned_until.is_(None), Broadcast.planned_until < horizon),
        )
    ).all()  # fmt: skip
    new_rows: list[dict] = []
    advanced: list[dict] = []
    finished: list[int] = []  # rules that have ended: done once nothing of them is open
    until = horizon + PLAN_STEP
    for broadcast_id, spec, planned_until, late_s, duration_ms in rows:
        if spec is None:  # a one-off: PostgreSQL stores its None as JSON `null`, which IS NOT NULL
            continue
        rule = recurrence.Rule.from_dict(spec)
        begin = max(planned_until or now, now - MISSED_LOOKBACK)
        end = rule_end(rule)
        if end is not None and begin >= end:
            advanced.append({"id": broadcast_id, "planned_until": end})
            finished.append(broadcast_id)
            continue
        late = timedelta(seconds=sched.late_start_s if late_s is None else late_s)
        for start in recurrence.expand(rule, begin, until):
            new_rows.append(
                _occurrence_row(
                    broadcast_id=broadcast_id,
                    start=start,
                    late=late,
                    duration_ms=duration_ms or 0,
                    grace_s=sched.report_grace_s,
                    now=now,
                )  # fmt: skip
            )
        advanced.append({"id": broadcast_id, "planned_until": until if end is None else min(until, end)})
    if new_rows:
        session.execute(insert(Occurrence), new_rows)
    if advanced:
        session.execute(update(Broadcast), advanced)
    if new_rows:
        log.info(
            "planned %d occurrences of %d recurring broadcasts up to %s", len(new_rows), len(rows), until
        )
    return len(new_rows)


def due_occurrences(*, session: Session, until: datetime) -> list[Occurrence]:
    """Occurrences still to dispatch before `until`, or dispatched and not yet closed."""
    return list(
        session.scalars(
            select(Occurrence).where(
                or_(
                    (Occurrence.status == OccurrenceStatus.scheduled) & (Occurrence.start_at < until),
                    Occurrence.status == OccurrenceStatus.dispatched,
                )
            )
        ).all()
    )


def vacated_starts(*, session: Session, occurrence_ids: Sequence[int]) -> list[datetime]:
    """Start times of these occurrences at which no occurrence is still scheduled (after a cancel)."""
    starts = set(session.scalars(select(Occurrence.start_at).where(Occurrence.id.in_(occurrence_ids))))
    if not starts:
        return []
    taken = set(
        session.scalars(
            select(Occurrence.start_at).where(
                Occurrence.start_at.in_(starts), Occurrence.status == OccurrenceStatus.scheduled
            )
        )
    )
    return sorted(starts - taken)


def open_occurrences(*, session: Session) -> list[Occurrence]:
    """Occurrences still waiting to be dispatched or closed."""
    return list(
        session.scalars(
            select(Occurrence).where(
                Occurrence.status.in_([OccurrenceStatus.scheduled, OccurrenceStatus.dispatched])
            )
        ).all()
    )


def plan_topics(*, area_codes: Sequence[str], devices: Sequence[Device]) -> tuple[list[str], list[str]]:
    """The fewest area topics that cover the areas, and device ids not covered by them."""
    chosen: list[str] = []
    for code in sorted(set(area_codes), key=lambda c: len(regions.code_prefix(c))):
        if not any(regions.is_under(code, c) for c in chosen):
            chosen.append(code)
    loose = [d.id for d in devices if not any(regions.is_under(d.area_code, c) for c in chosen)]
    return chosen, loose


def topics_of(session: Session, broadcast: Broadcast) -> list[str]:
    explicit = list(
        session.scalars(select(Device).where(Device.id.in_(broadcast.target_devices or []))).all()
    )
    area_topics, device_ids = plan_topics(area_codes=broadcast.target_areas, devices=explicit)
    return [protocol.area_command_topic(c) for c in area_topics] + [
        protocol.device_topic(d, "cmd") for d in device_ids
    ]


def dispatch_ahead(sched: SchedulerSettings) -> timedelta:
    """How long before start_at an airing is published: the lead time, or the prefetch if longer."""
    return timedelta(seconds=max(sched.lead_time_s, sched.prefetch_s))

