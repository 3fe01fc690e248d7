"""Reading broadcasts: lists, one broadcast's view, next airings, and the schedule view with conflicts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from core import regions
from core.clock import utcnow
from core.errors import InvalidInput, NotFound
from core.models import User
from scheduler import conflicts, recurrence
from scheduler.models import OPEN_STATUSES, Broadcast, BroadcastStatus, Occurrence, OccurrenceStatus
from scheduler.planning import CHECK_AHEAD, rule_of, target_area_codes
from scheduler.schemas import BroadcastRead, ConflictRead, OccurrenceRead

# Conflicts shown when scheduling cover this far ahead.
CONFLICT_AHEAD = timedelta(days=14)
# The schedule view covers at most this long a window per request.
MAX_VIEW = timedelta(days=31)
# Occurrences embedded in a broadcast's view; the rest at /occurrences.
EMBEDDED_OCCURRENCES = 20


def broadcast_view(*, session: Session, broadcast: Broadcast, with_conflicts: bool = False) -> BroadcastRead:
    """The API view: the broadcast, its nearest occurrences, next airings, and (asked) conflicts."""
    now = utcnow()
    query = select(Occurrence).where(Occurrence.broadcast_id == broadcast.id)
    if broadcast.recurrence:
        query = query.where(
            or_(
                Occurrence.start_at >= now - timedelta(hours=1),
                Occurrence.status.in_([OccurrenceStatus.scheduled, OccurrenceStatus.dispatched]),
            )
        )
    occurrences = session.scalars(query.order_by(Occurrence.start_at).limit(EMBEDDED_OCCURRENCES)).all()
    view = BroadcastRead.model_validate(broadcast, from_attributes=True).model_copy(
        update={
            "occurrences": [OccurrenceRead.model_validate(o) for o in occurrences],
            "next_airings": next_airings(broadcast=broadcast, now=now),
        }
    )
    if with_conflicts and broadcast.status in OPEN_STATUSES:
        found = conflicts_of(session=session, broadcast=broadcast, now=now)
        view.conflicts = [ConflictRead(**c) for c in found]
    return view


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
    rule = rule_of(broadcast)
    if rule is None:
        return [broadcast.start_at] if broadcast.start_at and broadcast.start_at > now else []
    out: list[datetime] = []
    start = now
    while len(out) < count and start < now + CHECK_AHEAD:
        out += recurrence.expand(rule, start, start + timedelta(days=31))
        start += timedelta(days=31)
    return out[:count]


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
        rule = rule_of(broadcast)
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
        raise InvalidInput("to", "must be after `from`")
    if end - start > MAX_VIEW:
        raise InvalidInput("to", f"at most {MAX_VIEW.days} days after `from`")
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
        targets = target_area_codes(session, broadcast)
        if not conflicts.areas_overlap(targets, area_codes):
            continue
        out += _airings_of(session, broadcast, targets, start, end, durations.get(broadcast.asset_id, 0))
    out.sort(key=lambda a: (a.start, a.broadcast_id))
    return out


def conflicts_of(*, session: Session, broadcast: Broadcast, now: datetime | None = None) -> list[dict]:
    """Airings of other broadcasts that overlap this one's on shared speakers (next two weeks)."""
    now = now or utcnow()
    targets = target_area_codes(session, broadcast)
    if not targets:
        return []
    everything = airings(session=session, area_codes=targets, start=now, end=now + CONFLICT_AHEAD)
    return [c.describe() for c in conflicts.find(everything, only_broadcast=broadcast.id)]
