"""Broadcasts: create, submit, approve, reject, cancel; plan occurrences; dispatch and close them.

Lifecycle (every step is in the audit log, with who, when and comment):

    draft -> submitted -> approved -> scheduled -> done
                       -> rejected         \\-> cancelled (also from draft/submitted/approved)

- The audio is fixed at submission (a notice synthesised with its speech settings, a playlist
  assembled into one file, or an existing asset taken as it is): an approval covers exactly what
  will be heard, and editing a playlist later changes nothing that was submitted.
- Routine broadcasts need an approver (or admin) whose area holds the targets; when that person
  submits, approval is immediate (recorded as such). Emergency broadcasts always need a second
  person: the creator can never approve their own.
- Quiet hours refuse routine airings at submission (listing the offending times) and again at air
  time (the occurrence becomes `refused`).
- Occurrences are planned when approved: a one-off gets its one occurrence, a recurring broadcast
  those inside the rolling horizon (`extend_horizon` keeps it rolling).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, func, insert, or_, select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from core import regions
from core.clock import utcnow
from core.db import session_scope
from core.models import Region, RegionLevel, Role, User
from core.settings import SchedulerSettings, Settings
from devices import commands as device_commands
from devices import protocol
from devices import service as device_service
from devices.models import Delivery, Device
from devices.transport import Link, LinkError
from playlists import service as playlist_service
from reports import reach as reach_stats
from scheduler import audit, conflicts, quiet, recurrence
from scheduler.exceptions import BroadcastError, Forbidden, InvalidState, NotFound
from scheduler.models import (
    OPEN_STATUSES,
    Broadcast,
    BroadcastStatus,
    Occurrence,
    OccurrenceStatus,
    Priority,
)
from tts import service as tts_service
from tts.schemas import SpeechSettings

log = logging.getLogger(__name__)

# A start_at this far in the past is refused as a mistake rather than aired late.
PAST_TOLERANCE_S = 5.0
# One-off broadcasts are planned at most this far ahead.
MAX_AHEAD = timedelta(days=366)
# Quiet-hour checks of a recurring rule cover its whole range, at most this far ahead.
CHECK_AHEAD = timedelta(days=366)
# Conflicts shown when scheduling cover this far ahead.
CONFLICT_AHEAD = timedelta(days=14)
# The schedule view covers at most this long a window per request.
MAX_VIEW = timedelta(days=31)
# Offending quiet-hour times spelled out in an error (the total is always given).
MAX_LISTED = 20
# The horizon is extended in steps this long, so most planner ticks change nothing.
PLAN_STEP = timedelta(hours=12)
# After a long outage, airings missed up to this long ago are still recorded as missed.
MISSED_LOOKBACK = timedelta(days=7)
AUDIT_TYPE = "broadcast"

_LEVEL_PRIORITY = {
    RegionLevel.county: Priority.county,
    RegionLevel.township: Priority.township,
    RegionLevel.village: Priority.village,
}
APPROVER_ROLES = frozenset({Role.admin, Role.approver})


# ------------------------------------------------------------------ scope


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


def scope_of(codes: Sequence[str]) -> str | None:
    """The narrowest county, township or village code holding every code."""
    codes = list(dict.fromkeys(codes))
    if not codes:
        return None
    if len(codes) == 1:
        return codes[0]
    if len({c[:9] for c in codes}) == 1:
        return codes[0][:9] + "000"
    if len({c[:6] for c in codes}) == 1:
        return codes[0][:6] + "000000"
    return None  # several counties: only unbound users see it


def can_see(*, user: User, broadcast: Broadcast) -> bool:
    """A user bound to an area sees broadcasts whose targets all lie inside it."""
    if user.area_code is None:
        return True
    return broadcast.scope_code is not None and regions.is_under(broadcast.scope_code, user.area_code)


def approval_refusal(*, user: User, broadcast: Broadcast) -> str | None:
    """Why this user may not approve this broadcast, or None when they may."""
    if user.role not in APPROVER_ROLES:
        return f"role {user.role} may not approve; needs approver or admin"
    if user.area_code is not None and not can_see(user=user, broadcast=broadcast):
        return f"the targets are outside your area {user.area_code}"
    if broadcast.priority.is_emergency and broadcast.created_by == user.id:
        return "an emergency broadcast needs a second person: its creator cannot approve it"
    return None


def _rule(broadcast: Broadcast) -> recurrence.Rule | None:
    return recurrence.Rule.from_dict(broadcast.recurrence) if broadcast.recurrence else None


def _zone(settings: Settings) -> ZoneInfo:
    return ZoneInfo(settings.scheduler.timezone)


def _late_start(broadcast: Broadcast, settings: Settings) -> timedelta:
    seconds = broadcast.late_start_s
    return timedelta(seconds=settings.scheduler.late_start_s if seconds is None else seconds)


def _duration_ms(session: Session, broadcast: Broadcast) -> int:
    if broadcast.asset_id is None:
        return 0
    asset = tts_service.get_asset(session=session, asset_id=broadcast.asset_id)
    return asset.duration_ms if asset is not None else 0


def _target_area_codes(session: Session, broadcast: Broadcast) -> list[str]:
    codes = list(broadcast.target_areas or [])
    if broadcast.target_devices:
        codes += session.scalars(
            select(Device.area_code).where(Device.id.in_(list(broadcast.target_devices)))
        ).all()
    return list(dict.fromkeys(codes))


# ------------------------------------------------------------------ create and the approval flow


def _instants(
    *, broadcast: Broadcast, settings: Settings, now: datetime, rule: recurrence.Rule | None
) -> list[datetime]:
    """When the broadcast would air from now on (a recurring rule over its range, capped)."""
    if rule is None:
        return [broadcast.start_at or now + timedelta(seconds=settings.scheduler.lead_time_s)]
    return recurrence.expand(rule, now, now + CHECK_AHEAD)


def _check_quiet_hours(
    *,
    session: Session,
    settings: Settings,
    broadcast: Broadcast,
    instants: Sequence[datetime],
    duration_ms: int,
) -> None:
    """Raise BroadcastError listing the airings that fall into quiet hours (routine only)."""
    if broadcast.priority.is_emergency:
        return
    windows = quiet.windows_for(
        session=session, settings=settings, area_codes=_target_area_codes(session, broadcast)
    )
    length = timedelta(milliseconds=duration_ms)
    zone = ZoneInfo(broadcast.recurrence["timezone"]) if broadcast.recurrence else _zone(settings)
    hits = quiet.offending(windows=windows, airings=[(i, i + length) for i in instants], zone=zone)
    if hits:
        listed = ", ".join(
            f"{recurrence.describe_local(i, zone.key)} (quiet {w.describe()})" for i, w in hits[:MAX_LISTED]
        )
        more = f" and {len(hits) - MAX_LISTED} more" if len(hits) > MAX_LISTED else ""
        raise BroadcastError(
            "recurrence" if broadcast.recurrence else "start_at",
            f"{len(hits)} airing(s) fall in quiet hours, when only emergency broadcasts may air: "
            f"{listed}{more}",
        )


def _one_source(*, text: str | None, playlist_id: int | None, asset_id: int | None) -> None:
    """Raise BroadcastError, naming a field, unless exactly one of text, playlist and asset is given."""
    given = [name for name, value in (("text", text), ("playlist_id", playlist_id), ("asset_id", asset_id))
             if value is not None]  # fmt: skip
    if not given:
        raise BroadcastError("text", "give `text` (a notice), `playlist_id` or `asset_id`: what is to air")
    if len(given) > 1:
        raise BroadcastError(
            given[-1], f"give only one of `text`, `playlist_id` and `asset_id`, not {' and '.join(given)}"
        )


def create_broadcast(
    *,
    session: Session,
    settings: Settings,
    user: User,
    title: str,
    areas: Sequence[str],
    text: str | None = None,
    speech: SpeechSettings | None = None,
    playlist_id: int | None = None,
    asset_id: int | None = None,
    previewed_asset_id: int | None = None,
    devices: Sequence[str] = (),
    start_at: datetime | None = None,
    recurrence_spec: dict | None = None,
    priority: Priority | None = None,
    volume: int | None = None,
    late_start_s: float | None = None,
    submit: bool = True,
    comment: str | None = None,
) -> Broadcast:
    """Validate, produce the audio and store a draft; with submit, submit it (and maybe approve it).

    What airs is exactly one of: `text` spoken with `speech` (the settings a preview takes; the
    same text and settings give the previewed asset from the cache), a playlist, or an existing
    audio asset aired as it is. `previewed_asset_id` (the console's preview) is aired instead of
    synthesising when it is what `text` and `speech` produce, even from a fallback engine.
    `volume` is the speakers' volume (0-100), not the loudness of the speech.

    Everything that can be refused is checked before anything is written: a refused request leaves
    at most cached audio behind.
    """
    areas = list(dict.fromkeys(areas))
    devices = list(dict.fromkeys(devices))
    if not areas and not devices:
        raise BroadcastError("areas", "give at least one area code or device id")
    known = {r.code: r for r in session.scalars(select(Region).where(Region.code.in_(areas))).all()}
    unknown = [code for code in areas if code not in known]
    if unknown:
        raise BroadcastError("areas", f"unknown area code(s): {', '.join(unknown)}")
    found = {d.id: d for d in session.scalars(select(Device).where(Device.id.in_(devices))).all()}
    missing = [d for d in devices if d not in found]
    if missing:
        raise BroadcastError("devices", f"unknown device id(s): {', '.join(missing)}")
    check_scope(user=user, area_codes=areas, devices=list(found.values()))

    _one_source(text=text, playlist_id=playlist_id, asset_id=asset_id)
    if speech is not None and text is None:
        raise BroadcastError(
            "speech", "speech settings go with `text`; a playlist or an audio asset airs as it was made"
        )
    playlist = asset = None
    if playlist_id is not None:
        playlist = playlist_service.get(session=session, playlist_id=playlist_id)
        if playlist is None or not playlist_service.visible_to(user=user, playlist=playlist):
            raise BroadcastError("playlist_id", f"no playlist {playlist_id}")
    if asset_id is not None:
        asset = tts_service.get_asset(session=session, asset_id=asset_id)
        if asset is None:
            raise BroadcastError("asset_id", f"no audio asset {asset_id}")
        if not tts_service.asset_path(settings=settings, asset=asset).is_file():
            raise BroadcastError("asset_id", f"the file of audio asset {asset_id} is gone; make it again")

    now = utcnow()
    rule = None
    if start_at is not None and recurrence_spec is not None:
        raise BroadcastError("recurrence", "give `start_at` (one airing) or `recurrence`, not both")
    if start_at is not None:
        if start_at.tzinfo is None:
            raise BroadcastError("start_at", "give a time zone offset, e.g. 2026-12-01T07:00:00+08:00")
        if start_at < now - timedelta(seconds=PAST_TOLERANCE_S):
            raise BroadcastError("start_at", f"{start_at.isoformat()} is in the past")
        if start_at > now + MAX_AHEAD:
            raise BroadcastError("start_at", "more than a year ahead")
    if recurrence_spec is not None:
        try:
            rule = recurrence.Rule.from_dict(recurrence_spec)
        except recurrence.RecurrenceError as exc:
            raise BroadcastError(f"recurrence.{exc.field}", exc.message) from None
        problems = recurrence.local_time_problems(rule)
        if problems:
            raise BroadcastError("recurrence.times", "; ".join(problems))
        if not recurrence.expand(rule, now, now + CHECK_AHEAD):
            raise BroadcastError("recurrence", "the rule has no airing in the coming year")
    if priority is None:
        levels = [known[c].level for c in areas] or [RegionLevel.village]
        widest = min(levels, key=[RegionLevel.county, RegionLevel.township, RegionLevel.village].index)
        priority = _LEVEL_PRIORITY[widest]
    target_codes = areas + [d.area_code for d in found.values()]
    broadcast = Broadcast(
        title=title,
        text=text,
        playlist_id=playlist_id,
        priority=priority,
        status=BroadcastStatus.draft,
        target_areas=areas,
        target_devices=devices,
        scope_code=scope_of(target_codes),
        volume=volume,
        start_at=start_at,
        recurrence=rule.as_dict() if rule else None,
        late_start_s=late_start_s,
        created_by=user.id,
    )
    if submit:  # before any audio is made: quiet hours by start times alone
        _check_quiet_hours(
            session=session, settings=settings, broadcast=broadcast,
            instants=_instants(broadcast=broadcast, settings=settings, now=now, rule=rule), duration_ms=0,
        )  # fmt: skip
    # Synthesis commits the session (tts.service): nothing of the broadcast is in it yet.
    if asset is not None:
        broadcast.asset_id = asset.id
    elif text is not None:
        synthesis = tts_service.synthesize_sync(
            session=session, settings=settings, text=text, prefer_asset_id=previewed_asset_id,
            **(speech or SpeechSettings()).options(),
        )  # fmt: skip
        broadcast.asset_id = synthesis.asset.id
    elif submit:
        broadcast.asset_id = playlist_service.assemble(
            session=session, settings=settings, playlist=playlist
        ).id
    if submit:  # and again with the real length: an airing may run into quiet hours
        _check_quiet_hours(
            session=session, settings=settings, broadcast=broadcast,
            instants=_instants(broadcast=broadcast, settings=settings, now=now, rule=rule),
            duration_ms=_duration_ms(session, broadcast),
        )  # fmt: skip
    session.add(broadcast)
    session.flush()
    audit.record(
        session=session, user=user, action="created", object_type=AUDIT_TYPE, object_id=broadcast.id,
        detail={"priority": str(priority), "areas": areas, "devices": devices,
                "playlist_id": playlist_id, "asset_id": broadcast.asset_id,
                "recurrence": broadcast.recurrence},
    )  # fmt: skip
    log.info("broadcast %s %r created by %s (%s)", broadcast.id, title, user.username, priority)
    if submit:
        submit_broadcast(session=session, settings=settings, user=user, broadcast=broadcast, comment=comment)
    return broadcast


def submit_broadcast(
    *, session: Session, settings: Settings, user: User, broadcast: Broadcast, comment: str | None = None
) -> Broadcast:
    """Draft -> submitted (fixing the audio); approved at once when the submitter may approve it."""
    if broadcast.status != BroadcastStatus.draft:
        raise InvalidState(f"broadcast {broadcast.id} is {broadcast.status}; only a draft can be submitted")
    if broadcast.created_by != user.id and user.role != Role.admin:
        raise Forbidden("only its author (or an admin) submits a draft")
    now = utcnow()
    if broadcast.start_at is not None and broadcast.start_at < now - timedelta(seconds=PAST_TOLERANCE_S):
        raise BroadcastError("start_at", f"{broadcast.start_at.isoformat()} has passed; change it first")
    if broadcast.playlist_id is not None and broadcast.asset_id is None:
        playlist = playlist_service.get(session=session, playlist_id=broadcast.playlist_id)
        if playlist is None:
            raise BroadcastError("playlist_id", f"playlist {broadcast.playlist_id} was deleted")
        broadcast.asset_id = playlist_service.assemble(
            session=session, settings=settings, playlist=playlist
        ).id
    _check_quiet_hours(
        session=session, settings=settings, broadcast=broadcast,
        instants=_instants(broadcast=broadcast, settings=settings, now=now, rule=_rule(broadcast)),
        duration_ms=_duration_ms(session, broadcast),
    )  # fmt: skip
    broadcast.status = BroadcastStatus.submitted
    broadcast.submitted_at = now
    audit.record(
        session=session, user=user, action="submitted", object_type=AUDIT_TYPE, object_id=broadcast.id,
        comment=comment, detail={"asset_id": broadcast.asset_id},
    )  # fmt: skip
    if approval_refusal(user=user, broadcast=broadcast) is None:
        approve_broadcast(
            session=session, settings=settings, user=user, broadcast=broadcast,
            comment="submitted by an approver for these areas", auto=True,
        )  # fmt: skip
    return broadcast


def approve_broadcast(
    *,
    session: Session,
    settings: Settings,
    user: User,
    broadcast: Broadcast,
    comment: str | None = None,
    auto: bool = False,
) -> list[Occurrence]:
    """Submitted -> approved -> scheduled; return the occurrences planned now."""
    if broadcast.status != BroadcastStatus.submitted:
        raise InvalidState(
            f"broadcast {broadcast.id} is {broadcast.status}; only a submitted one is approved"
        )
    refusal = approval_refusal(user=user, broadcast=broadcast)
    if refusal is not None:
        raise Forbidden(refusal)
    now = utcnow()
    if broadcast.start_at is not None and broadcast.start_at + _late_start(broadcast, settings) < now:
        raise InvalidState(
            f"its start {broadcast.start_at.isoformat()} passed while it waited; reject it and submit anew"
        )
    broadcast.status = BroadcastStatus.approved
    broadcast.reviewed_by, broadcast.reviewed_at, broadcast.review_comment = user.id, now, comment
    planned = plan_occurrences(session=session, settings=settings, broadcast=broadcast, now=now)
    broadcast.status = BroadcastStatus.scheduled
    audit.record(
        session=session, user=user, action="approved", object_type=AUDIT_TYPE, object_id=broadcast.id,
        comment=comment, detail={"auto": auto, "occurrences_planned": len(planned)},
    )  # fmt: skip
    log.info(
        "broadcast %s approved by %s%s; %d occurrences planned",
        broadcast.id, user.username, " (own routine)" if auto else "", len(planned),
    )  # fmt: skip
    return planned


def reject_broadcast(*, session: Session, user: User, broadcast: Broadcast, comment: str | None) -> Broadcast:
    """Submitted -> rejected, with the reason."""
    if broadcast.status != BroadcastStatus.submitted:
        raise InvalidState(
            f"broadcast {broadcast.id} is {broadcast.status}; only a submitted one is rejected"
        )
    if not (comment or "").strip():
        raise BroadcastError("comment", "say why it is rejected")
    refusal = approval_refusal(user=user, broadcast=broadcast)
    if refusal is not None and not refusal.startswith("an emergency"):
        raise Forbidden(refusal.replace("approve", "reject"))
    broadcast.status = BroadcastStatus.rejected
    broadcast.reviewed_by, broadcast.reviewed_at, broadcast.review_comment = user.id, utcnow(), comment
    audit.record(
        session=session, user=user, action="rejected", object_type=AUDIT_TYPE, object_id=broadcast.id,
        comment=comment,
    )  # fmt: skip
    return broadcast


@dataclass
class StopPlan:
    """Occurrences to stop on speakers (after the transaction commits), with their topics."""

    occurrence_ids: list[int] = field(default_factory=list)
    topics: dict[int, list[str]] = field(default_factory=dict)
    cancelled: list[int] = field(default_factory=list)


def _topics_of(session: Session, broadcast: Broadcast) -> list[str]:
    explicit = list(
        session.scalars(select(Device).where(Device.id.in_(broadcast.target_devices or []))).all()
    )
    area_topics, device_ids = plan_topics(area_codes=broadcast.target_areas, devices=explicit)
    return [protocol.area_command_topic(c) for c in area_topics] + [
        protocol.device_topic(d, "cmd") for d in device_ids
    ]


def cancel_broadcast(
    *, session: Session, user: User, broadcast: Broadcast, comment: str | None = None
) -> StopPlan:
    """Cancel future airings; return what is on air (or about to be) so the caller stops it."""
    if broadcast.status not in OPEN_STATUSES:
        raise InvalidState(f"broadcast {broadcast.id} is {broadcast.status}; nothing to cancel")
    own = broadcast.created_by == user.id
    may_approve = user.role in APPROVER_ROLES and (
        user.area_code is None or can_see(user=user, broadcast=broadcast)
    )
    if not (own or may_approve):
        raise Forbidden("only its author or an approver for its areas can cancel it")
    now = utcnow()
    plan = StopPlan()
    topics = None
    for occ in broadcast.occurrences:
        if occ.status == OccurrenceStatus.scheduled:
            occ.status, occ.detail = OccurrenceStatus.cancelled, f"cancelled by {user.username}"
            occ.finalized_at = now
            plan.cancelled.append(occ.id)
        elif occ.status == OccurrenceStatus.dispatched and occ.deadline_at > now:
            topics = topics if topics is not None else _topics_of(session, broadcast)
            plan.occurrence_ids.append(occ.id)
            plan.topics[occ.id] = topics
    broadcast.status = BroadcastStatus.cancelled
    audit.record(
        session=session, user=user, action="cancelled", object_type=AUDIT_TYPE, object_id=broadcast.id,
        comment=comment, detail={"cancelled": plan.cancelled, "stopped": plan.occurrence_ids},
    )  # fmt: skip
    return plan


def send_stops(*, link: Link, plan: StopPlan) -> int:
    """Publish a `stop` for every occurrence in the plan; return the commands sent."""
    sent = 0
    for occurrence_id in plan.occurrence_ids:
        payload = device_commands.encode_command(protocol.StopCommand(occurrence_id=occurrence_id))
        sent += device_commands.publish(link=link, topics=plan.topics[occurrence_id], payload=payload)
    return sent


def stop_area(*, session: Session, user: User, area_code: str, comment: str | None = None) -> StopPlan:
    """Everything on air in an area: a stop per live occurrence reaching it, and a stop-all."""
    if user.role not in APPROVER_ROLES:
        raise Forbidden(f"role {user.role} may not stop broadcasts; needs approver or admin")
    if session.get(Region, area_code) is None:
        raise NotFound(f"no area {area_code}")
    check_scope(user=user, area_codes=[area_code], devices=[])
    now = utcnow()
    rows = session.execute(
        select(Occurrence.id, Broadcast)
        .join(Broadcast, Broadcast.id == Occurrence.broadcast_id)
        .where(Occurrence.status == OccurrenceStatus.dispatched, Occurrence.deadline_at > now)
    ).all()
    topic = protocol.area_command_topic(area_code)
    plan = StopPlan()
    for occurrence_id, broadcast in rows:
        if conflicts.areas_overlap(_target_area_codes(session, broadcast), [area_code]):
            plan.occurrence_ids.append(occurrence_id)
            plan.topics[occurrence_id] = [topic]
    audit.record(
        session=session, user=user, action="stop_area", object_type="area", object_id=area_code,
        comment=comment, detail={"stopped": plan.occurrence_ids},
    )  # fmt: skip
    return plan


def send_area_stop(*, link: Link, plan: StopPlan, area_code: str) -> int:
    """The stops of `stop_area`, then one stop-whatever-plays on the area topic."""
    sent = send_stops(link=link, plan=plan)
    payload = device_commands.encode_command(protocol.StopCommand(occurrence_id=None))
    return sent + device_commands.publish(
        link=link, topics=[protocol.area_command_topic(area_code)], payload=payload
    )


# ------------------------------------------------------------------ reading


def get_broadcast(*, session: Session, broadcast_id: int) -> Broadcast:
    """Return the broadcast or raise NotFound."""
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise NotFound(f"no broadcast {broadcast_id}")
    return broadcast


def list_broadcasts(
    *,
    session: Session,
    user: User,
    status: BroadcastStatus | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Broadcast], int]:
    """Newest first; a user bound to an area sees broadcasts whose targets lie inside it."""
    query = select(Broadcast)
    if user.area_code is not None:
        query = query.where(Broadcast.scope_code.startswith(regions.code_prefix(user.area_code)))
    if status is not None:
        query = query.where(Broadcast.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(query.order_by(Broadcast.id.desc()).limit(limit).offset(offset)).all()
    return list(items), total


def list_occurrences(
    *, session: Session, broadcast: Broadcast, limit: int = 100, offset: int = 0
) -> tuple[list[Occurrence], int]:
    """Planned occurrences of a broadcast in time order, with the total."""
    query = select(Occurrence).where(Occurrence.broadcast_id == broadcast.id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(query.order_by(Occurrence.start_at).limit(limit).offset(offset)).all()
    return list(items), total


def next_airings(*, broadcast: Broadcast, now: datetime, count: int = 10) -> list[datetime]:
    """The next airings from the rule (also beyond the planning horizon)."""
    if broadcast.status not in OPEN_STATUSES:
        return []
    rule = _rule(broadcast)
    if rule is None:
        return [broadcast.start_at] if broadcast.start_at and broadcast.start_at > now else []
    out: list[datetime] = []
    start = now
    while len(out) < count and start < now + CHECK_AHEAD:
        out += recurrence.expand(rule, start, start + timedelta(days=31))
        start += timedelta(days=31)
    return out[:count]


def reach(*, session: Session, broadcast: Broadcast, level: str | None = None) -> dict:
    """Reach figures of a broadcast over all its occurrences."""
    if level is None:
        widest = min((len(regions.code_prefix(c)) for c in broadcast.target_areas), default=12)
        level = "township" if widest <= 6 else "village"
    figures = reach_stats.broadcast_reach(
        session=session, occurrence_ids=[o.id for o in broadcast.occurrences], level=level
    )
    final = broadcast.status in (
        BroadcastStatus.done,
        BroadcastStatus.cancelled,
        BroadcastStatus.rejected,
    ) and all(
        o.status not in (OccurrenceStatus.scheduled, OccurrenceStatus.dispatched)
        for o in broadcast.occurrences
    )
    return {"broadcast_id": broadcast.id, "status": broadcast.status, "final": final, **figures}


# ------------------------------------------------------------------ planning


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
    late, duration = _late_start(broadcast, settings), _duration_ms(session, broadcast)
    rule = _rule(broadcast)
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


# ------------------------------------------------------------------ the schedule view


def _airings_of(
    session: Session, broadcast: Broadcast, areas: list[str], start: datetime, end: datetime, duration_ms: int
) -> list[conflicts.Airing]:
    out: list[conflicts.Airing] = []
    planned = session.scalars(
        select(Occurrence).where(
            Occurrence.broadcast_id == broadcast.id, Occurrence.start_at >= start, Occurrence.start_at < end
        )
    ).all()
    for occ in planned:
        out.append(
            conflicts.Airing(
                broadcast.id,
                occ.id,
                broadcast.title,
                broadcast.priority,
                *conflicts.span(occ.start_at, duration_ms),
                tuple(areas),
                str(occ.status),
            )  # fmt: skip
        )
    if broadcast.status in (BroadcastStatus.submitted, BroadcastStatus.approved, BroadcastStatus.scheduled):
        rule = _rule(broadcast)
        if rule is not None:
            begin = max(start, broadcast.planned_until) if broadcast.planned_until else start
            instants = recurrence.expand(rule, begin, end) if begin < end else []
        elif not broadcast.occurrences and broadcast.start_at and start <= broadcast.start_at < end:
            instants = [broadcast.start_at]
        else:
            instants = []
        for instant in instants:
            out.append(
                conflicts.Airing(
                    broadcast.id,
                    None,
                    broadcast.title,
                    broadcast.priority,
                    *conflicts.span(instant, duration_ms),
                    tuple(areas),
                    str(broadcast.status),
                )  # fmt: skip
            )
    return out


def airings(
    *, session: Session, area_codes: Sequence[str], start: datetime, end: datetime
) -> list[conflicts.Airing]:
    """Every airing in [start, end) that reaches any of these areas (planned or projected)."""
    from tts.models import AudioAsset

    if end <= start:
        raise BroadcastError("to", "must be after `from`")
    if end - start > MAX_VIEW:
        raise BroadcastError("to", f"at most {MAX_VIEW.days} days after `from`")
    prefixes = [regions.code_prefix(c) for c in area_codes]
    ancestors = {a for c in area_codes for a in regions.chain(c)}
    candidates = session.scalars(
        select(Broadcast).where(
            Broadcast.status.in_(
                [BroadcastStatus.submitted, BroadcastStatus.approved, BroadcastStatus.scheduled,
                 BroadcastStatus.done, BroadcastStatus.cancelled]
            ),
            or_(Broadcast.scope_code.in_(ancestors), *[Broadcast.scope_code.startswith(p) for p in prefixes]),
        )
    ).all()  # fmt: skip
    durations = dict(
        session.execute(
            select(AudioAsset.id, AudioAsset.duration_ms).where(
                AudioAsset.id.in_({b.asset_id for b in candidates if b.asset_id})
            )
        ).all()
    )
    out: list[conflicts.Airing] = []
    for broadcast in candidates:
        targets = _target_area_codes(session, broadcast)
        if not conflicts.areas_overlap(targets, area_codes):
            continue
        out += _airings_of(session, broadcast, targets, start, end, durations.get(broadcast.asset_id, 0))
    out.sort(key=lambda a: (a.start, a.broadcast_id))
    return out


def conflicts_of(*, session: Session, broadcast: Broadcast, now: datetime | None = None) -> list[dict]:
    """Airings of other broadcasts that overlap this one's on shared speakers (next two weeks)."""
    now = now or utcnow()
    targets = _target_area_codes(session, broadcast)
    if not targets:
        return []
    everything = airings(session=session, area_codes=targets, start=now, end=now + CONFLICT_AHEAD)
    return [c.describe() for c in conflicts.find(everything, only_broadcast=broadcast.id)]


# ------------------------------------------------------------------ dispatch and close


def plan_topics(*, area_codes: Sequence[str], devices: Sequence[Device]) -> tuple[list[str], list[str]]:
    """The fewest area topics that cover the areas, and device ids not covered by them."""
    chosen: list[str] = []
    for code in sorted(set(area_codes), key=lambda c: len(regions.code_prefix(c))):
        if not any(regions.is_under(code, c) for c in chosen):
            chosen.append(code)
    loose = [d.id for d in devices if not any(regions.is_under(d.area_code, c) for c in chosen)]
    return chosen, loose


def dispatch_ahead(sched: SchedulerSettings) -> timedelta:
    """How long before start_at an airing is published: the lead time, or the prefetch if longer."""
    return timedelta(seconds=max(sched.lead_time_s, sched.prefetch_s))


# One dispatch batch at a time in a process: an occurrence stays `scheduled` until its commands
# are out, so two batches running at once could both send it.
_batch_lock = threading.Lock()


@dataclass
class _Airing:
    """An occurrence ready to go out: deliveries snapshotted, command encoded (signed at publish)."""

    occurrence_id: int
    rank: int
    start_at: datetime
    topics: list[str]
    payload: bytes
    speakers: int


def dispatch_due(
    *, session_factory: sessionmaker[Session], link: Link, settings: Settings, at: datetime
) -> dict[int, str]:
    """Dispatch, as one batch, every occurrence whose dispatch time has come by `at` (or by now).

    The dispatch time is `start_at` minus `dispatch_ahead`. Airings that fall together (the 07:00
    slot of a whole county) go out together: one transaction snapshots all their deliveries, their
    play commands are published highest priority first, and one transaction records them as
    dispatched. Returns the new status of every occurrence the batch handled.
    """
    cutoff = max(at, utcnow()) + dispatch_ahead(settings.scheduler)
    return _dispatch_batch(
        session_factory=session_factory, link=link, settings=settings, which=Occurrence.start_at <= cutoff
    )


def dispatch(
    *, session_factory: sessionmaker[Session], link: Link, settings: Settings, occurrence_id: int
) -> str:
    """Dispatch one occurrence now (a batch of one); return its status afterwards."""
    outcome = _dispatch_batch(
        session_factory=session_factory, link=link, settings=settings, which=Occurrence.id == occurrence_id
    )
    if occurrence_id in outcome:
        return outcome[occurrence_id]
    with session_factory() as session:
        occ = session.get(Occurrence, occurrence_id)
        return occ.status if occ is not None else "unknown"


def _dispatch_batch(
    *, session_factory: sessionmaker[Session], link: Link, settings: Settings, which: ColumnElement[bool]
) -> dict[int, str]:
    """Prepare (one transaction), publish, then record (one transaction) the due occurrences.

    Recorded only after publishing: a runner that dies in between leaves them `scheduled`, and the
    next runner sends them again (with the deliveries already snapshotted). Speakers keep one
    airing per occurrence id, so a command that went out twice airs once; one never sent would
    never air.
    """
    with _batch_lock:
        outcome: dict[int, str] = {}
        with session_scope(session_factory) as session:
            airings = _prepare_batch(session=session, settings=settings, which=which, outcome=outcome)
        # Deliveries are committed before the first command leaves, so no report can beat them.
        sent: list[_Airing] = []
        failed: dict[int, str] = {}
        sent_at = utcnow()
        try:
            for airing in airings:  # highest priority first
                try:
                    device_commands.publish(link=link, topics=airing.topics, payload=airing.payload)
                except LinkError as exc:
                    failed[airing.occurrence_id] = str(exc)
                else:
                    sent.append(airing)
        finally:
            if sent or failed:
                with session_scope(session_factory) as session:
                    outcome |= _record_batch(session=session, sent=sent, failed=failed, at=sent_at)
        _stop_withdrawn(link=link, sent=sent, outcome=outcome)
        for airing in sent:
            if outcome.get(airing.occurrence_id) == OccurrenceStatus.dispatched:
                log.info(
                    "occurrence %s dispatched to %d speakers over %d topics",
                    airing.occurrence_id, airing.speakers, len(airing.topics),
                )  # fmt: skip
        for occurrence_id, reason in failed.items():
            log.error("occurrence %s could not be sent: %s", occurrence_id, reason)
        if len(sent) > 1:
            log.info("dispatched %d occurrences in one batch", len(sent))
        return outcome


def _prepare_batch(
    *, session: Session, settings: Settings, which: ColumnElement[bool], outcome: dict[int, str]
) -> list[_Airing]:
    """Settle what cannot air (too late, quiet hours, no audio), snapshot the rest's deliveries.

    A handful of statements for the whole batch plus one insert per airing (its deliveries), on
    plain rows rather than ORM objects: the batch is on the clock. Returns the airings to publish,
    highest priority first.
    """
    from tts.models import AudioAsset

    rows = session.execute(
        select(
            Occurrence.id, Occurrence.start_at, Occurrence.expires_at, Broadcast.id.label("broadcast_id"),
            Broadcast.title, Broadcast.priority, Broadcast.target_areas, Broadcast.target_devices,
            Broadcast.asset_id, Broadcast.volume,
        )
        .join(Broadcast, Broadcast.id == Occurrence.broadcast_id)
        .where(Occurrence.status == OccurrenceStatus.scheduled, which)
        .order_by(Occurrence.start_at, Occurrence.id)
    ).all()  # fmt: skip
    if not rows:
        return []
    now = utcnow()
    asset_ids = {r.asset_id for r in rows if r.asset_id is not None}
    assets = {a.id: a for a in session.scalars(select(AudioAsset).where(AudioAsset.id.in_(asset_ids)))}
    named = {d for r in rows for d in r.target_devices or []}
    explicit = {d.id: d for d in session.scalars(select(Device).where(Device.id.in_(named)))} if named else {}

    def settle(occurrence_id: int, status: OccurrenceStatus, detail: str, *, final: bool = False) -> None:
        values = {"status": status, "detail": detail} | ({"finalized_at": now} if final else {})
        session.execute(
            update(Occurrence)
            .where(Occurrence.id == occurrence_id, Occurrence.status == OccurrenceStatus.scheduled)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        outcome[occurrence_id] = status

    live = []
    for r in rows:
        if now > r.expires_at:
            detail = f"dispatch ran at {now.isoformat()}, after the latest start {r.expires_at.isoformat()}"
            log.error("occurrence %s missed: %s", r.id, detail)
            settle(r.id, OccurrenceStatus.missed, detail)
        elif r.asset_id not in assets:
            detail = f"broadcast {r.broadcast_id} has no audio asset {r.asset_id}"
            log.error("occurrence %s not sent: %s", r.id, detail)
            settle(r.id, OccurrenceStatus.failed, detail)
        else:
            live.append(r)

    # Quiet hours again at air time (routine only): they may have changed since submission.
    routine = [r for r in live if not r.priority.is_emergency]
    area_sets = [
        list(dict.fromkeys([*(r.target_areas or []), *(explicit[d].area_code for d in r.target_devices or []
                                                       if d in explicit)]))
        for r in routine
    ]  # fmt: skip
    windows = quiet.windows_for_each(session=session, settings=settings, area_sets=area_sets)
    refused: set[int] = set()
    for r, area_windows in zip(routine, windows, strict=True):
        end = r.start_at + timedelta(milliseconds=assets[r.asset_id].duration_ms)
        hits = quiet.offending(windows=area_windows, airings=[(r.start_at, end)], zone=_zone(settings))
        if hits:
            detail = f"in quiet hours {hits[0][1].describe()} at air time; only emergency may air"
            log.warning("occurrence %s refused: %s", r.id, detail)
            settle(r.id, OccurrenceStatus.refused, detail, final=True)
            refused.add(r.id)
    ready = [r for r in live if r.id not in refused]
    if not ready:
        return []

    # The speakers of every airing in one query, split per airing by area code.
    devices = device_service.expand_targets(
        session=session,
        area_codes=sorted({code for r in ready for code in r.target_areas or []}),
        device_ids=sorted({d for r in ready for d in r.target_devices or []}),
    )
    by_area: dict[str, list[Device]] = {}
    for device in devices:
        by_area.setdefault(device.area_code, []).append(device)
    # Snapshotted by a runner that died before recording the dispatch: send again, snapshot once.
    snapshotted = dict(
        session.execute(
            select(Delivery.occurrence_id, func.count())
            .where(Delivery.occurrence_id.in_([r.id for r in ready]))
            .group_by(Delivery.occurrence_id)
        ).all()
    )
    airings: list[_Airing] = []
    by_asset: dict[int, list[int]] = {}
    for r in ready:
        asset = assets[r.asset_id]
        prefixes = tuple(regions.code_prefix(c) for c in r.target_areas or [])
        targets = {d.id: d for code, group in by_area.items() if code.startswith(prefixes) for d in group}
        for device_id in r.target_devices or []:
            if device_id in explicit:
                targets.setdefault(device_id, explicit[device_id])
        if r.id in snapshotted:
            count = snapshotted[r.id]
            log.warning("occurrence %s was prepared but not recorded as sent: sending it again", r.id)
        else:
            count = device_service.snapshot_deliveries(
                session=session, occurrence_id=r.id, devices=[targets[k] for k in sorted(targets)]
            )
        own = [explicit[d] for d in r.target_devices or [] if d in explicit]
        area_topics, device_ids = plan_topics(area_codes=r.target_areas or [], devices=own)
        command = protocol.PlayCommand(
            occurrence_id=r.id,
            broadcast_id=r.broadcast_id,
            title=r.title,
            audio_url=f"{settings.public_url.rstrip('/')}/media/{asset.sha256}.mp3",
            sha256=asset.sha256,
            size_bytes=asset.size_bytes,
            duration_s=asset.duration_ms / 1000,
            start_at=r.start_at,
            expires_at=r.expires_at,
            priority=r.priority.rank,
            volume=r.volume,
        )
        topics = [protocol.area_command_topic(c) for c in area_topics]
        topics += [protocol.device_topic(d, "cmd") for d in device_ids]
        by_asset.setdefault(asset.id, []).append(r.id)
        airings.append(
            _Airing(
                occurrence_id=r.id, rank=r.priority.rank, start_at=r.start_at, topics=topics,
                payload=device_commands.encode_command(command), speakers=count,
            )
        )  # fmt: skip
    for asset_id, ids in by_asset.items():  # the audio actually sent
        session.execute(
            update(Occurrence)
            .where(Occurrence.id.in_(ids))
            .values(asset_id=asset_id)
            .execution_options(synchronize_session=False)
        )
    airings.sort(key=lambda a: (-a.rank, a.start_at, a.occurrence_id))
    return airings


def _record_batch(
    *, session: Session, sent: Sequence[_Airing], failed: dict[int, str], at: datetime
) -> dict[int, str]:
    """scheduled -> dispatched for what went out, -> failed for what the link refused."""
    outcome: dict[int, str] = {}
    ids = [a.occurrence_id for a in sent]
    if ids:
        recorded = session.scalars(
            update(Occurrence)
            .where(Occurrence.id.in_(ids), Occurrence.status == OccurrenceStatus.scheduled)
            .values(status=OccurrenceStatus.dispatched, dispatched_at=at)
            .returning(Occurrence.id)
            .execution_options(synchronize_session=False)
        ).all()
        outcome |= dict.fromkeys(recorded, OccurrenceStatus.dispatched)
        others = [i for i in ids if i not in outcome]
        if others:  # changed while being sent (cancelled): what are they now
            outcome |= dict(
                session.execute(
                    select(Occurrence.id, Occurrence.status).where(Occurrence.id.in_(others))
                ).all()
            )
    for occurrence_id, reason in failed.items():
        done = session.execute(
            update(Occurrence)
            .where(Occurrence.id == occurrence_id, Occurrence.status == OccurrenceStatus.scheduled)
            .values(status=OccurrenceStatus.failed, detail=reason)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 1:
            outcome[occurrence_id] = OccurrenceStatus.failed
    return outcome


def _stop_withdrawn(*, link: Link, sent: Sequence[_Airing], outcome: dict[int, str]) -> None:
    """A play command that went out for an occurrence cancelled meanwhile is followed by a stop.

    (Cancelling a `scheduled` occurrence sends no stop: it was not on the speakers yet.)
    """
    for airing in sent:
        if outcome.get(airing.occurrence_id) != OccurrenceStatus.cancelled:
            continue
        payload = device_commands.encode_command(protocol.StopCommand(occurrence_id=airing.occurrence_id))
        try:
            device_commands.publish(link=link, topics=airing.topics, payload=payload)
        except LinkError as exc:
            log.error(
                "occurrence %s was cancelled while sent; its stop failed: %s", airing.occurrence_id, exc
            )
        else:
            log.warning("occurrence %s was cancelled while being sent: stop sent", airing.occurrence_id)


def _finished(session: Session, broadcast: Broadcast) -> bool:
    """Every airing has happened (or never will): no planned one open, and the rule has ended."""
    still_open = session.scalar(
        select(func.count())
        .select_from(Occurrence)
        .where(
            Occurrence.broadcast_id == broadcast.id,
            Occurrence.status.in_([OccurrenceStatus.scheduled, OccurrenceStatus.dispatched]),
        )
    )
    if still_open:
        return False
    rule = _rule(broadcast)
    if rule is None:
        return True
    end = rule_end(rule)
    return end is not None and broadcast.planned_until is not None and broadcast.planned_until >= end


def close_due(*, session_factory: sessionmaker[Session], deadline: datetime) -> int:
    """At a reporting deadline, settle every occurrence whose deadline it is, in one transaction.

    Returns how many deliveries became no_report.
    """
    with session_scope(session_factory) as session:
        occurrences = session.scalars(
            select(Occurrence)
            .options(selectinload(Occurrence.broadcast))
            .where(Occurrence.deadline_at == deadline, Occurrence.status != OccurrenceStatus.cancelled)
        ).all()
        return _close(session, occurrences)


def close(*, session_factory: sessionmaker[Session], occurrence_id: int) -> int:
    """At the deadline: unreported deliveries become no_report; return how many did."""
    with session_scope(session_factory) as session:
        occ = session.get(Occurrence, occurrence_id)
        return _close(session, [occ]) if occ is not None else 0


def _close(session: Session, occurrences: Sequence[Occurrence]) -> int:
    total = 0
    now = utcnow()
    broadcasts: dict[int, Broadcast] = {}
    for occ in occurrences:
        n = device_service.finalize_deliveries(session=session, occurrence_id=occ.id, at=occ.deadline_at)
        if occ.status in (OccurrenceStatus.scheduled, OccurrenceStatus.dispatched):
            occ.status = (
                OccurrenceStatus.done
                if occ.status == OccurrenceStatus.dispatched
                else OccurrenceStatus.missed
            )
            if occ.status == OccurrenceStatus.missed:
                occ.detail = "never dispatched before its deadline"
        occ.finalized_at = now
        broadcasts[occ.broadcast_id] = occ.broadcast
        log.info("occurrence %s closed; %d deliveries without report", occ.id, n)
        total += n
    session.flush()
    for broadcast in broadcasts.values():
        if broadcast.status == BroadcastStatus.scheduled and _finished(session, broadcast):
            broadcast.status = BroadcastStatus.done
    return total
