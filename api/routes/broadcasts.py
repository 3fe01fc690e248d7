"""Broadcasts: create, the approval flow (submit, approve, reject, cancel), occurrences, reach."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Body, Depends, HTTPException, Query, status
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from api.deps import CurrentUser, ServicesDep, SessionDep, SettingsDep, require_roles
from api.routes.common import Limit, Offset, Page
from core.clock import utcnow
from core.errors import InvalidInput as PlaylistError  # bridge until guarded() goes: by its field
from core.models import Role, User
from devices import service as device_service
from devices.schemas import DeliveryRead
from devices.transport import LinkError
from scheduler import audit
from scheduler import service as scheduler_service
from scheduler.exceptions import BroadcastError, Forbidden, InvalidState, NotFound
from scheduler.models import Broadcast, BroadcastStatus, Occurrence, OccurrenceStatus
from scheduler.schemas import AuditRead, BroadcastCreate, BroadcastRead, ConflictRead, OccurrenceRead, Review
from tts.audio import AudioError
from tts.engines import EngineError
from tts.exceptions import SpeechInputError
from tts.text import TextError

router = APIRouter(prefix="/api/v1/broadcasts", tags=["broadcasts"])

Author = Annotated[User, Depends(require_roles(Role.staff, Role.approver))]
Approver = Annotated[User, Depends(require_roles(Role.approver))]
# Occurrences embedded in a broadcast; the rest at /occurrences.
EMBEDDED_OCCURRENCES = 20
T = TypeVar("T")


def field_error(field: str, message: str) -> HTTPException:
    """422 in FastAPI's shape, naming the field."""
    return HTTPException(
        status_code=422,
        detail=[{"loc": ["body", *field.split(".")], "msg": message, "type": "value_error"}],
    )


def guarded(call: Callable[[], T]) -> T:
    """Run a service call, mapping domain errors to HTTP answers."""
    try:
        return call()
    except BroadcastError as exc:
        raise field_error(exc.field, exc.message) from None
    except PlaylistError as exc:
        raise field_error(exc.field, exc.message) from None
    except TextError as exc:
        raise field_error("text", str(exc)) from None
    except SpeechInputError as exc:  # voice, rate, ...: the speech settings of `text`
        raise field_error(f"speech.{exc.field}", exc.message) from None
    except ValueError as exc:  # the speech engine's own parameter checks (rate)
        raise field_error("speech.rate", str(exc)) from None
    except Forbidden as exc:
        raise HTTPException(status_code=403, detail=str(exc)) from None
    except NotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except InvalidState as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except (EngineError, AudioError) as exc:
        raise HTTPException(status_code=503, detail=f"speech synthesis failed: {exc}") from None


def load(session: Session, broadcast_id: int, user: User) -> Broadcast:
    """The broadcast, if the user may see it (404 / 403 otherwise)."""
    broadcast = guarded(lambda: scheduler_service.get_broadcast(session=session, broadcast_id=broadcast_id))
    if not scheduler_service.can_see(user=user, broadcast=broadcast):
        raise HTTPException(
            status_code=403, detail=f"broadcast {broadcast_id} is outside your area {user.area_code}"
        )
    return broadcast


def read(session: Session, broadcast: Broadcast, *, with_conflicts: bool = False) -> BroadcastRead:
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
            "next_airings": scheduler_service.next_airings(broadcast=broadcast, now=now),
        }
    )
    if with_conflicts and broadcast.status in (
        BroadcastStatus.draft, BroadcastStatus.submitted, BroadcastStatus.approved, BroadcastStatus.scheduled
    ):  # fmt: skip
        found = scheduler_service.conflicts_of(session=session, broadcast=broadcast, now=now)
        view.conflicts = [ConflictRead(**c) for c in found]
    return view


def plan_jobs(services, broadcast: Broadcast, occurrences) -> None:
    for occ in occurrences:
        services.runner.schedule(occ)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_broadcast(
    body: BroadcastCreate, session: SessionDep, settings: SettingsDep, services: ServicesDep, user: Author
) -> BroadcastRead:
    """Make a broadcast (a notice with its `speech` settings, a playlist, or an audio asset aired as
    it is; once or recurring) and, unless `submit` is false, submit it. An approver's (or admin's)
    own routine broadcast is approved at once; anything else waits for an approver, and an
    emergency always for a second person."""
    broadcast = guarded(
        lambda: scheduler_service.create_broadcast(
            session=session,
            settings=settings,
            user=user,
            title=body.title,
            text=body.text,
            speech=body.speech,
            playlist_id=body.playlist_id,
            asset_id=body.asset_id,
            areas=body.areas,
            devices=body.devices,
            start_at=body.start_at,
            recurrence_spec=body.recurrence.model_dump(mode="json") if body.recurrence else None,
            priority=body.priority,
            volume=body.volume,
            late_start_s=body.late_start_s,
            submit=body.submit,
            comment=body.comment,
        )
    )
    session.commit()  # the dispatch job must find it
    plan_jobs(services, broadcast, broadcast.occurrences)
    return read(session, broadcast, with_conflicts=True)


@router.get("")
def list_broadcasts(
    session: SessionDep,
    user: CurrentUser,
    status: Annotated[
        BroadcastStatus | None, Query(description="Only this state; `submitted` is the approval queue.")
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[BroadcastRead]:
    """Broadcasts, newest first (within the user's area)."""
    items, total = scheduler_service.list_broadcasts(
        session=session, user=user, status=status, limit=limit, offset=offset
    )
    return Page(items=[read(session, b) for b in items], total=total)


@router.get("/{broadcast_id}")
def get_broadcast(broadcast_id: int, session: SessionDep, user: CurrentUser) -> BroadcastRead:
    """One broadcast with its nearest occurrences, next airings and current conflicts."""
    return read(session, load(session, broadcast_id, user), with_conflicts=True)


@router.post("/{broadcast_id}/submit")
def submit(
    broadcast_id: int,
    session: SessionDep,
    settings: SettingsDep,
    services: ServicesDep,
    user: Author,
    body: Annotated[Review | None, Body()] = None,
) -> BroadcastRead:
    """Draft -> submitted (audio fixed now; refused with the offending times if in quiet hours)."""
    broadcast = load(session, broadcast_id, user)
    guarded(
        lambda: scheduler_service.submit_broadcast(
            session=session, settings=settings, user=user, broadcast=broadcast, comment=body and body.comment
        )
    )
    session.commit()
    plan_jobs(services, broadcast, broadcast.occurrences)
    return read(session, broadcast, with_conflicts=True)


@router.post("/{broadcast_id}/approve")
def approve(
    broadcast_id: int,
    session: SessionDep,
    settings: SettingsDep,
    services: ServicesDep,
    user: Approver,
    body: Annotated[Review | None, Body()] = None,
) -> BroadcastRead:
    """Submitted -> approved -> scheduled. Emergency: never by its own creator."""
    broadcast = load(session, broadcast_id, user)
    planned = guarded(
        lambda: scheduler_service.approve_broadcast(
            session=session, settings=settings, user=user, broadcast=broadcast, comment=body and body.comment
        )
    )
    session.commit()
    plan_jobs(services, broadcast, planned)
    return read(session, broadcast, with_conflicts=True)


@router.post("/{broadcast_id}/reject")
def reject(broadcast_id: int, body: Review, session: SessionDep, user: Approver) -> BroadcastRead:
    """Submitted -> rejected; `comment` (the reason) is required."""
    broadcast = load(session, broadcast_id, user)
    guarded(
        lambda: scheduler_service.reject_broadcast(
            session=session, user=user, broadcast=broadcast, comment=body.comment
        )
    )
    return read(session, broadcast)


@router.post("/{broadcast_id}/cancel")
def cancel(
    broadcast_id: int,
    session: SessionDep,
    services: ServicesDep,
    user: CurrentUser,
    body: Annotated[Review | None, Body()] = None,
) -> BroadcastRead:
    """Stop future airings and send `stop` to speakers playing (or about to play) it."""
    broadcast = load(session, broadcast_id, user)
    plan = guarded(
        lambda: scheduler_service.cancel_broadcast(
            session=session, user=user, broadcast=broadcast, comment=body and body.comment
        )
    )
    session.commit()
    services.runner.unschedule(plan.cancelled)
    try:
        scheduler_service.send_stops(link=services.link, plan=plan)
    except LinkError as exc:
        raise HTTPException(
            status_code=503, detail=f"cancelled, but the stop could not be sent to speakers: {exc}"
        ) from None
    return read(session, broadcast)


@router.get("/{broadcast_id}/occurrences")
def list_occurrences(
    broadcast_id: int, session: SessionDep, user: CurrentUser, limit: Limit = 100, offset: Offset = 0
) -> Page[OccurrenceRead]:
    """Planned occurrences (the rolling horizon), oldest first; later airings are in `next_airings`."""
    broadcast = load(session, broadcast_id, user)
    items, total = scheduler_service.list_occurrences(
        session=session, broadcast=broadcast, limit=limit, offset=offset
    )
    return Page(items=[OccurrenceRead.model_validate(o) for o in items], total=total)


@router.get("/{broadcast_id}/history")
def history(broadcast_id: int, session: SessionDep, user: CurrentUser) -> list[AuditRead]:
    """The audit log of this broadcast: who created, submitted, approved, rejected, cancelled."""
    broadcast = load(session, broadcast_id, user)
    entries = audit.history(session=session, object_type=scheduler_service.AUDIT_TYPE, object_id=broadcast.id)
    return [AuditRead.model_validate(e) for e in entries]


@router.get("/{broadcast_id}/reach")
def get_reach(
    broadcast_id: int,
    session: SessionDep,
    user: CurrentUser,
    level: Annotated[
        Literal["township", "village"] | None,
        Query(description="Breakdown level; absent: township for county-wide, else village."),
    ] = None,
) -> dict:
    """Who was targeted, who played, and the population reached (see docs/reach.md)."""
    return scheduler_service.reach(session=session, broadcast=load(session, broadcast_id, user), level=level)


@router.get("/{broadcast_id}/deliveries")
def list_deliveries(
    broadcast_id: int,
    session: SessionDep,
    user: CurrentUser,
    state: Annotated[str | None, Query(description="Only deliveries in this state.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[DeliveryRead]:
    """Per-speaker delivery states of a broadcast."""
    broadcast = load(session, broadcast_id, user)
    items, total = device_service.list_deliveries(
        session=session,
        occurrence_ids=[o.id for o in broadcast.occurrences],
        state=state,
        limit=limit,
        offset=offset,
    )
    return Page(items=[DeliveryRead.model_validate(d) for d in items], total=total)
