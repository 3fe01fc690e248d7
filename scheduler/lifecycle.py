"""A broadcast's lifecycle: create, submit, approve, reject, cancel; and stopping an area.

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
  those inside the rolling horizon (`planning.extend_horizon` keeps it rolling).

These verbs change the session and flush; they never commit, schedule or publish. The use cases in
`scheduler.flows` call them, commit, and only then plan jobs and send commands.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.errors import Conflict, Forbidden, NotFound
from core.models import Region, RegionLevel, Role, User
from core.settings import Settings
from cunxiang_shared import protocol
from devices.models import Device
from playlists import service as playlist_service
from scheduler import audit, conflicts, quiet, recurrence
from scheduler.access import APPROVER_ROLES, approval_refusal, check_scope, may_cancel, scope_of
from scheduler.exceptions import BroadcastError, QuietHoursRefusal
from scheduler.models import OPEN_STATUSES, Broadcast, BroadcastStatus, Occurrence, OccurrenceStatus, Priority
from scheduler.planning import (
    CHECK_AHEAD,
    duration_ms,
    late_start,
    plan_occurrences,
    rule_of,
    target_area_codes,
    topics_of,
    zone_of,
)
from scheduler.schemas import BroadcastCreate
from tts import service as tts_service
from tts.schemas import SpeechSettings

log = logging.getLogger(__name__)

# A start_at this far in the past is refused as a mistake rather than aired late.
PAST_TOLERANCE_S = 5.0

# One-off broadcasts are planned at most this far ahead.
MAX_AHEAD = timedelta(days=366)

# Offending quiet-hour times spelled out in an error (the total is always given).
MAX_LISTED = 20

AUDIT_TYPE = "broadcast"


_LEVEL_PRIORITY = {
    RegionLevel.county: Priority.county,
    RegionLevel.township: Priority.township,
    RegionLevel.village: Priority.village,
}



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
    """Raise QuietHoursRefusal listing the airings that fall into quiet hours (routine only)."""
    if broadcast.priority.is_emergency:
        return
    windows = quiet.windows_for(
        session=session, settings=settings, area_codes=target_area_codes(session, broadcast)
    )
    length = timedelta(milliseconds=duration_ms)
    zone = ZoneInfo(broadcast.recurrence["timezone"]) if broadcast.recurrence else zone_of(settings)
    hits = quiet.offending(windows=windows, airings=[(i, i + length) for i in instants], zone=zone)
    if hits:
        listed = ", ".join(
            f"{recurrence.describe_local(i, zone.key)} (quiet {w.describe()})" for i, w in hits[:MAX_LISTED]
        )
        more = f" and {len(hits) - MAX_LISTED} more" if len(hits) > MAX_LISTED else ""
        raise QuietHoursRefusal(
            "recurrence" if broadcast.recurrence else "start_at", count=len(hits), listed=listed + more
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
    broadcast_in: BroadcastCreate,
    previewed_asset_id: int | None = None,
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
    b = broadcast_in
    title, text, speech, playlist_id, asset_id = b.title, b.text, b.speech, b.playlist_id, b.asset_id
    start_at, priority, volume, late_start_s = b.start_at, b.priority, b.volume, b.late_start_s
    submit = b.submit
    recurrence_spec = b.recurrence.model_dump(mode="json") if b.recurrence else None
    areas, devices = b.areas, b.devices
    areas = list(dict.fromkeys(areas))
    devices = list(dict.fromkeys(devices))
    if not areas and not devices:
        raise BroadcastError("areas", "give at least one area code or device id")
    known = {r.code: r for r in session.scalars(select(Region).where(Region.code.in_(areas))).all()}
    unknown = [code for code in areas if code not in known]
    if unknown:
        raise BroadcastError("areas", f"unknown area code(s): {', '.join(unknown)}", reason="unknown_area")
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
        if not tts_service.usable_by(session=session, asset=asset, user=user):
            raise Forbidden(f"audio asset {asset_id} belongs to another area", reason="area")
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
            raise BroadcastError("start_at", f"{start_at.isoformat()} is in the past", reason="past")
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
    if asset is not None:
        broadcast.asset_id = asset.id
    elif text is not None:
        synthesis = tts_service.synthesize_sync(
            session=session, settings=settings, text=text, prefer_asset_id=previewed_asset_id,
            **(speech or SpeechSettings()).options(),
        )  # fmt: skip
        tts_service.grant(session=session, asset=synthesis.asset, user=user)  # its author may air it again
        broadcast.asset_id = synthesis.asset.id
    elif submit:
        broadcast.asset_id = playlist_service.assemble(
            session=session, settings=settings, playlist=playlist
        ).id
    if submit:  # and again with the real length: an airing may run into quiet hours
        _check_quiet_hours(
            session=session, settings=settings, broadcast=broadcast,
            instants=_instants(broadcast=broadcast, settings=settings, now=now, rule=rule),
            duration_ms=duration_ms(session, broadcast),
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
        submit_broadcast(
            session=session, settings=settings, user=user, broadcast=broadcast, comment=b.comment
        )
    return broadcast


def submit_broadcast(
    *, session: Session, settings: Settings, user: User, broadcast: Broadcast, comment: str | None = None
) -> Broadcast:
    """Draft -> submitted (fixing the audio); approved at once when the submitter may approve it."""
    if broadcast.status != BroadcastStatus.draft:
        raise Conflict(f"broadcast {broadcast.id} is {broadcast.status}; only a draft can be submitted")
    if broadcast.created_by != user.id and user.role != Role.admin:
        raise Forbidden("only its author (or an admin) submits a draft", reason="author")
    now = utcnow()
    if broadcast.start_at is not None and broadcast.start_at < now - timedelta(seconds=PAST_TOLERANCE_S):
        raise BroadcastError(
            "start_at", f"{broadcast.start_at.isoformat()} has passed; change it first", reason="past"
        )
    if broadcast.playlist_id is not None and broadcast.asset_id is None:
        playlist = playlist_service.get(session=session, playlist_id=broadcast.playlist_id)
        if playlist is None:
            raise BroadcastError("playlist_id", f"playlist {broadcast.playlist_id} was deleted")
        broadcast.asset_id = playlist_service.assemble(
            session=session, settings=settings, playlist=playlist
        ).id
    _check_quiet_hours(
        session=session, settings=settings, broadcast=broadcast,
        instants=_instants(broadcast=broadcast, settings=settings, now=now, rule=rule_of(broadcast)),
        duration_ms=duration_ms(session, broadcast),
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
        raise Conflict(
            f"broadcast {broadcast.id} is {broadcast.status}; only a submitted one is approved"
        )
    refusal = approval_refusal(user=user, broadcast=broadcast)
    if refusal is not None:
        raise refusal
    now = utcnow()
    if broadcast.start_at is not None and broadcast.start_at + late_start(broadcast, settings) < now:
        raise Conflict(
            f"its start {broadcast.start_at.isoformat()} passed while it waited; reject it and submit anew",
            reason="start_passed",
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
        raise Conflict(
            f"broadcast {broadcast.id} is {broadcast.status}; only a submitted one is rejected"
        )
    if not (comment or "").strip():
        raise BroadcastError("comment", "say why it is rejected")
    refusal = approval_refusal(user=user, broadcast=broadcast)
    if refusal is not None and refusal.reason != "emergency_second_person":  # its creator may not approve,
        raise Forbidden(refusal.message.replace("approve", "reject"), reason=refusal.reason)  # but may reject
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
    # An area stop also sends one stop-whatever-plays (occurrence_id null) on this topic.
    stop_all_topic: str | None = None


def cancel_broadcast(
    *, session: Session, user: User, broadcast: Broadcast, comment: str | None = None
) -> StopPlan:
    """Cancel future airings; return what is on air (or about to be) so the caller stops it."""
    if broadcast.status not in OPEN_STATUSES:
        raise Conflict(f"broadcast {broadcast.id} is {broadcast.status}; nothing to cancel")
    if not may_cancel(user=user, broadcast=broadcast):
        raise Forbidden("only its author or an approver for its areas can cancel it", reason="cancel")
    now = utcnow()
    plan = StopPlan()
    topics = None
    for occ in broadcast.occurrences:
        if occ.status == OccurrenceStatus.scheduled:
            occ.status, occ.detail = OccurrenceStatus.cancelled, f"cancelled by {user.username}"
            occ.finalized_at = now
            plan.cancelled.append(occ.id)
        elif occ.status == OccurrenceStatus.dispatched and occ.deadline_at > now:
            topics = topics if topics is not None else topics_of(session, broadcast)
            plan.occurrence_ids.append(occ.id)
            plan.topics[occ.id] = topics
    broadcast.status = BroadcastStatus.cancelled
    audit.record(
        session=session, user=user, action="cancelled", object_type=AUDIT_TYPE, object_id=broadcast.id,
        comment=comment, detail={"cancelled": plan.cancelled, "stopped": plan.occurrence_ids},
    )  # fmt: skip
    return plan


def stop_area(*, session: Session, user: User, area_code: str, comment: str | None = None) -> StopPlan:
    """Everything on air in an area: a stop per live occurrence reaching it, and a stop-all."""
    if user.role not in APPROVER_ROLES:
        raise Forbidden(f"role {user.role} may not stop broadcasts; needs approver or admin", reason="role")
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
    plan = StopPlan(stop_all_topic=topic)
    for occurrence_id, broadcast in rows:
        if conflicts.areas_overlap(target_area_codes(session, broadcast), [area_code]):
            plan.occurrence_ids.append(occurrence_id)
            plan.topics[occurrence_id] = [topic]
    audit.record(
        session=session, user=user, action="stop_area", object_type="area", object_id=area_code,
        comment=comment, detail={"stopped": plan.occurrence_ids},
    )  # fmt: skip
    return plan


class PlaylistBroadcasts:
    """`playlists.flows.Broadcasts` over the scheduler's tables: which open broadcasts air a
    playlist, and letting go of one that is deleted (playlists/ may not import scheduler/)."""

    def open_users(self, *, session: Session, playlist_id: int) -> list[int]:
        """Open broadcasts that air this playlist."""
        query = select(Broadcast.id).where(
            Broadcast.playlist_id == playlist_id, Broadcast.status.in_(OPEN_STATUSES)
        )
        return list(session.scalars(query))

    def release(self, *, session: Session, playlist_id: int) -> None:
        """Finished broadcasts keep their audio but no longer name the deleted playlist."""
        session.execute(
            update(Broadcast).where(Broadcast.playlist_id == playlist_id).values(playlist_id=None)
        )


PLAYLIST_BROADCASTS = PlaylistBroadcasts()
