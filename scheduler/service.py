"""Broadcasts: accept one, plan its occurrence, dispatch it to speakers, close it at its deadline."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core import regions
from core.clock import utcnow
from core.db import session_scope
from core.models import Region, RegionLevel, User
from core.settings import Settings
from devices import commands as device_commands
from devices import protocol
from devices import reach as reach_stats
from devices import service as device_service
from devices.models import Device
from devices.transport import Link, LinkError
from scheduler.exceptions import BroadcastError, Forbidden, NotFound
from scheduler.models import (
    Broadcast,
    BroadcastStatus,
    Occurrence,
    OccurrenceStatus,
    Priority,
)
from tts import service as tts_service

log = logging.getLogger(__name__)

# A start_at this far in the past is refused as a mistake rather than aired late.
PAST_TOLERANCE_S = 5.0
# Broadcasts are planned at most this far ahead (the recurrence issue adds rolling horizons).
MAX_AHEAD = timedelta(days=366)

_LEVEL_PRIORITY = {
    RegionLevel.county: Priority.county,
    RegionLevel.township: Priority.township,
    RegionLevel.village: Priority.village,
}


def check_scope(*, user: User, area_codes: Sequence[str], devices: Sequence[Device]) -> None:
    """Raise Forbidden unless every target lies inside the user's own area."""
    if user.area_code is None:
        return
    for code in area_codes:
        if not regions.is_under(code, user.area_code):
            raise Forbidden(f"area {code} is outside your area {user.area_code}")
    for device in devices:
        if not regions.is_under(device.area_code, user.area_code):
            raise Forbidden(f"device {device.id} is outside your area {user.area_code}")


def create_broadcast(
    *,
    session: Session,
    settings: Settings,
    user: User,
    title: str,
    text: str,
    areas: Sequence[str],
    devices: Sequence[str] = (),
    start_at: datetime | None = None,
    priority: Priority | None = None,
    volume: int | None = None,
    voice: str | None = None,
) -> Broadcast:
    """Validate targets, synthesise the speech, and store the broadcast with its occurrence."""
    areas = list(dict.fromkeys(areas))
    devices = list(dict.fromkeys(devices))
    if not areas and not devices:
        raise BroadcastError("areas", "give at least one area code or device id")
    regions = {r.code: r for r in session.scalars(select(Region).where(Region.code.in_(areas))).all()}
    unknown = [code for code in areas if code not in regions]
    if unknown:
        raise BroadcastError("areas", f"unknown area code(s): {', '.join(unknown)}")
    found = {d.id: d for d in session.scalars(select(Device).where(Device.id.in_(devices))).all()}
    missing = [d for d in devices if d not in found]
    if missing:
        raise BroadcastError("devices", f"unknown device id(s): {', '.join(missing)}")
    check_scope(user=user, area_codes=areas, devices=list(found.values()))

    now = utcnow()
    if start_at is not None:
        if start_at.tzinfo is None:
            raise BroadcastError("start_at", "give a time zone offset, e.g. 2026-12-01T07:00:00+08:00")
        if start_at < now - timedelta(seconds=PAST_TOLERANCE_S):
            raise BroadcastError("start_at", f"{start_at.isoformat()} is in the past")
        if start_at > now + MAX_AHEAD:
            raise BroadcastError("start_at", "more than a year ahead")
    if priority is None:
        levels = [regions[c].level for c in areas] or [RegionLevel.village]
        widest = min(levels, key=[RegionLevel.county, RegionLevel.township, RegionLevel.village].index)
        priority = _LEVEL_PRIORITY[widest]

    synthesis = tts_service.synthesize_sync(session=session, settings=settings, text=text, voice=voice)
    asset = synthesis.asset

    if start_at is None:
        # Now plus the lead time, measured after synthesis so speakers still get their lead.
        start_at = utcnow() + timedelta(seconds=settings.scheduler.lead_time_s)
    sched = settings.scheduler
    expires_at = start_at + timedelta(seconds=sched.late_start_s)
    deadline_at = expires_at + timedelta(milliseconds=asset.duration_ms, seconds=sched.report_grace_s)

    broadcast = Broadcast(
        title=title,
        text=text,
        priority=priority,
        target_areas=areas,
        target_devices=devices,
        volume=volume,
        asset_id=asset.id,
        created_by=user.id,
    )
    broadcast.occurrences.append(
        Occurrence(start_at=start_at, expires_at=expires_at, deadline_at=deadline_at)
    )
    session.add(broadcast)
    session.flush()
    log.info(
        "broadcast %s %r for %s at %s (%s, asset %s%s)",
        broadcast.id,
        title,
        ",".join(areas + devices),
        start_at.isoformat(),
        priority,
        asset.sha256[:12],
        ", cached" if synthesis.cached else "",
    )
    return broadcast


def get_broadcast(*, session: Session, broadcast_id: int) -> Broadcast:
    """Return the broadcast or raise NotFound."""
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise NotFound(f"no broadcast {broadcast_id}")
    return broadcast


def list_broadcasts(
    *, session: Session, user: User, limit: int = 50, offset: int = 0
) -> tuple[list[Broadcast], int]:
    """Newest first; a user bound to an area sees only broadcasts created inside it."""
    query = select(Broadcast)
    if user.area_code is not None:
        query = query.join(User, User.id == Broadcast.created_by).where(
            User.area_code.startswith(regions.code_prefix(user.area_code))
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(query.order_by(Broadcast.id.desc()).limit(limit).offset(offset)).all()
    return list(items), total


def reach(*, session: Session, broadcast: Broadcast, level: str | None = None) -> dict:
    """Reach figures of a broadcast over all its occurrences."""
    if level is None:
        widest = min((len(regions.code_prefix(c)) for c in broadcast.target_areas), default=12)
        level = "township" if widest <= 6 else "village"
    figures = reach_stats.reach(
        session=session, occurrence_ids=[o.id for o in broadcast.occurrences], level=level
    )
    final = all(
        o.status not in (OccurrenceStatus.scheduled, OccurrenceStatus.dispatched)
        for o in broadcast.occurrences
    )
    return {"broadcast_id": broadcast.id, "status": broadcast.status, "final": final, **figures}


# ------------------------------------------------------------------ dispatch and close


def plan_topics(*, area_codes: Sequence[str], devices: Sequence[Device]) -> tuple[list[str], list[str]]:
    """The fewest area topics that cover the areas, and device ids not covered by them."""
    chosen: list[str] = []
    for code in sorted(set(area_codes), key=lambda c: len(regions.code_prefix(c))):
        if not any(regions.is_under(code, c) for c in chosen):
            chosen.append(code)
    loose = [d.id for d in devices if not any(regions.is_under(d.area_code, c) for c in chosen)]
    return chosen, loose


def dispatch(
    *, session_factory: sessionmaker[Session], link: Link, settings: Settings, occurrence_id: int
) -> str:
    """Snapshot the target speakers and publish the play commands; return the new status."""
    with session_scope(session_factory) as session:
        occ = session.get(Occurrence, occurrence_id)
        if occ is None:
            log.warning("dispatch of unknown occurrence %s", occurrence_id)
            return "unknown"
        if occ.status != OccurrenceStatus.scheduled:
            return occ.status  # already handled (the job may run twice after a crash)
        now = utcnow()
        if now > occ.expires_at:
            occ.status = OccurrenceStatus.missed
            occ.detail = (
                f"dispatch ran at {now.isoformat()}, after the latest start {occ.expires_at.isoformat()}"
            )
            log.error("occurrence %s missed: %s", occ.id, occ.detail)
            return occ.status
        broadcast = occ.broadcast
        asset = tts_service.get_asset(session=session, asset_id=broadcast.asset_id)
        if asset is None:
            raise RuntimeError(f"broadcast {broadcast.id} has no audio asset {broadcast.asset_id}")
        explicit = list(
            session.scalars(select(Device).where(Device.id.in_(broadcast.target_devices or []))).all()
        )
        targets = device_service.expand_targets(
            session=session, area_codes=broadcast.target_areas, device_ids=broadcast.target_devices
        )
        count = device_service.snapshot_deliveries(session=session, occurrence_id=occ.id, devices=targets)
        area_topics, device_ids = plan_topics(area_codes=broadcast.target_areas, devices=explicit)
        command = protocol.PlayCommand(
            occurrence_id=occ.id,
            broadcast_id=broadcast.id,
            title=broadcast.title,
            audio_url=f"{settings.public_url.rstrip('/')}/media/{asset.sha256}.mp3",
            sha256=asset.sha256,
            size_bytes=asset.size_bytes,
            duration_s=asset.duration_ms / 1000,
            start_at=occ.start_at,
            expires_at=occ.expires_at,
            priority=broadcast.priority.rank,
            volume=broadcast.volume,
        )
        payload = device_commands.encode_command(command)
        topics = [protocol.area_command_topic(c) for c in area_topics]
        topics += [protocol.device_topic(d, "cmd") for d in device_ids]
        occ.status = OccurrenceStatus.dispatched
        occ.dispatched_at = now
    # Deliveries are committed before the first command leaves, so no report can beat them.
    try:
        device_commands.publish(link=link, topics=topics, payload=payload)
    except LinkError as exc:
        with session_scope(session_factory) as session:
            occ = session.get(Occurrence, occurrence_id)
            occ.status = OccurrenceStatus.failed
            occ.detail = str(exc)
        log.error("occurrence %s could not be sent: %s", occurrence_id, exc)
        return OccurrenceStatus.failed
    log.info("occurrence %s dispatched to %d speakers over %d topics", occurrence_id, count, len(topics))
    return OccurrenceStatus.dispatched


def close(*, session_factory: sessionmaker[Session], occurrence_id: int) -> int:
    """At the deadline: unreported deliveries become no_report; return how many did."""
    with session_scope(session_factory) as session:
        occ = session.get(Occurrence, occurrence_id)
        if occ is None:
            return 0
        n = device_service.finalize_deliveries(session=session, occurrence_id=occ.id, at=occ.deadline_at)
        if occ.status in (OccurrenceStatus.scheduled, OccurrenceStatus.dispatched):
            occ.status = (
                OccurrenceStatus.done
                if occ.status == OccurrenceStatus.dispatched
                else OccurrenceStatus.missed
            )
            if occ.status == OccurrenceStatus.missed:
                occ.detail = "never dispatched before its deadline"
        occ.finalized_at = utcnow()
        broadcast = occ.broadcast
        if all(
            o.status not in (OccurrenceStatus.scheduled, OccurrenceStatus.dispatched)
            for o in broadcast.occurrences
        ):
            broadcast.status = BroadcastStatus.done
    log.info("occurrence %s closed; %d deliveries without report", occurrence_id, n)
    return n


def open_occurrences(*, session: Session) -> list[Occurrence]:
    """Occurrences still waiting to be dispatched or closed."""
    return list(
        session.scalars(
            select(Occurrence).where(
                Occurrence.status.in_([OccurrenceStatus.scheduled, OccurrenceStatus.dispatched])
            )
        ).all()
    )
