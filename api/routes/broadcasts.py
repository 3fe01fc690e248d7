"""Broadcasts: create, the approval flow (submit, approve, reject, cancel), occurrences, reach.

Each action parses, calls one use case of `scheduler.flows`, and renders; refusals are the error
family, answered by api/errors.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, status

from api.deps import CurrentUser, PlannerDep, SenderDep, SessionDep, SettingsDep
from api.routes.common import AUTHED, BAD_BODY, CONFLICT, UNAVAILABLE, Id, Limit, Offset, Page
from devices import service as device_service
from devices.schemas import DeliveryRead
from reports import reach
from scheduler import audit, flows, view
from scheduler.access import visible_broadcast
from scheduler.lifecycle import AUDIT_TYPE
from scheduler.models import BroadcastStatus
from scheduler.schemas import AuditRead, BroadcastCreate, BroadcastRead, OccurrenceRead, Review

router = APIRouter(prefix="/api/v1/broadcasts", tags=["broadcasts"], responses=AUTHED)

OptionalReview = Annotated[Review | None, Body()]


@router.post("", status_code=status.HTTP_201_CREATED, responses={**BAD_BODY, **CONFLICT, **UNAVAILABLE})
def create_broadcast(
    body: BroadcastCreate, session: SessionDep, settings: SettingsDep, planner: PlannerDep, user: CurrentUser
) -> BroadcastRead:
    """Make a broadcast (a notice with its `speech` settings, a playlist, or an audio asset aired as
    it is; once or recurring) and, unless `submit` is false, submit it. An approver's (or admin's)
    own routine broadcast is approved at once; anything else waits for an approver, and an
    emergency always for a second person."""
    broadcast = flows.create_broadcast(
        session=session, settings=settings, planner=planner, user=user, broadcast_in=body
    )
    return view.broadcast_view(session=session, broadcast=broadcast, with_conflicts=True)


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
    items, total = view.list_broadcasts(session=session, user=user, status=status, limit=limit, offset=offset)
    return Page(items=[view.broadcast_view(session=session, broadcast=b) for b in items], total=total)


@router.get("/{broadcast_id}")
def get_broadcast(broadcast_id: Id, session: SessionDep, user: CurrentUser) -> BroadcastRead:
    """One broadcast with its nearest occurrences, next airings and current conflicts."""
    broadcast = visible_broadcast(session=session, user=user, broadcast_id=broadcast_id)
    return view.broadcast_view(session=session, broadcast=broadcast, with_conflicts=True)


@router.post("/{broadcast_id}/submit", responses={**BAD_BODY, **CONFLICT, **UNAVAILABLE})
def submit(
    broadcast_id: Id,
    session: SessionDep,
    settings: SettingsDep,
    planner: PlannerDep,
    user: CurrentUser,
    body: OptionalReview = None,
) -> BroadcastRead:
    """Draft -> submitted (audio fixed now; refused with the offending times if in quiet hours)."""
    broadcast = flows.submit_broadcast(
        session=session, settings=settings, planner=planner, user=user, broadcast_id=broadcast_id,
        comment=body and body.comment,
    )  # fmt: skip
    return view.broadcast_view(session=session, broadcast=broadcast, with_conflicts=True)


@router.post("/{broadcast_id}/approve", responses={**BAD_BODY, **CONFLICT, **UNAVAILABLE})
def approve(
    broadcast_id: Id,
    session: SessionDep,
    settings: SettingsDep,
    planner: PlannerDep,
    user: CurrentUser,
    body: OptionalReview = None,
) -> BroadcastRead:
    """Submitted -> approved -> scheduled. Emergency: never by its own creator."""
    broadcast = flows.approve_broadcast(
        session=session, settings=settings, planner=planner, user=user, broadcast_id=broadcast_id,
        comment=body and body.comment,
    )  # fmt: skip
    return view.broadcast_view(session=session, broadcast=broadcast, with_conflicts=True)


@router.post("/{broadcast_id}/reject", responses={**BAD_BODY, **CONFLICT})
def reject(broadcast_id: Id, body: Review, session: SessionDep, user: CurrentUser) -> BroadcastRead:
    """Submitted -> rejected; `comment` (the reason) is required."""
    broadcast = flows.reject_broadcast(
        session=session, user=user, broadcast_id=broadcast_id, comment=body.comment
    )
    return view.broadcast_view(session=session, broadcast=broadcast)


@router.post("/{broadcast_id}/cancel", responses={**BAD_BODY, **CONFLICT, **UNAVAILABLE})
def cancel(
    broadcast_id: Id,
    session: SessionDep,
    planner: PlannerDep,
    sender: SenderDep,
    user: CurrentUser,
    body: OptionalReview = None,
) -> BroadcastRead:
    """Stop future airings and send `stop` to speakers playing (or about to play) it."""
    broadcast = flows.cancel_broadcast(
        session=session, planner=planner, sender=sender, user=user, broadcast_id=broadcast_id,
        comment=body and body.comment,
    )  # fmt: skip
    return view.broadcast_view(session=session, broadcast=broadcast)


@router.get("/{broadcast_id}/occurrences")
def list_occurrences(
    broadcast_id: Id, session: SessionDep, user: CurrentUser, limit: Limit = 100, offset: Offset = 0
) -> Page[OccurrenceRead]:
    """Planned occurrences (the rolling horizon), oldest first; later airings are in `next_airings`."""
    broadcast = visible_broadcast(session=session, user=user, broadcast_id=broadcast_id)
    items, total = view.list_occurrences(session=session, broadcast=broadcast, limit=limit, offset=offset)
    return Page(items=[OccurrenceRead.model_validate(o) for o in items], total=total)


@router.get("/{broadcast_id}/history")
def history(broadcast_id: Id, session: SessionDep, user: CurrentUser) -> list[AuditRead]:
    """The audit log of this broadcast: who created, submitted, approved, rejected, cancelled."""
    broadcast = visible_broadcast(session=session, user=user, broadcast_id=broadcast_id)
    entries = audit.history(session=session, object_type=AUDIT_TYPE, object_id=broadcast.id)
    return [AuditRead.model_validate(e) for e in entries]


@router.get("/{broadcast_id}/reach")
def get_reach(
    broadcast_id: Id,
    session: SessionDep,
    user: CurrentUser,
    level: Annotated[
        Literal["township", "village"] | None,
        Query(description="Breakdown level; absent: township for county-wide, else village."),
    ] = None,
) -> dict:
    """Who was targeted, who played, and the population reached (see docs/reach.md)."""
    broadcast = visible_broadcast(session=session, user=user, broadcast_id=broadcast_id)
    return reach.of_broadcast(session=session, broadcast=broadcast, level=level)


@router.get("/{broadcast_id}/deliveries")
def list_deliveries(
    broadcast_id: Id,
    session: SessionDep,
    user: CurrentUser,
    state: Annotated[str | None, Query(description="Only deliveries in this state.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[DeliveryRead]:
    """Per-speaker delivery states of a broadcast."""
    broadcast = visible_broadcast(session=session, user=user, broadcast_id=broadcast_id)
    items, total = device_service.list_deliveries(
        session=session,
        occurrence_ids=[o.id for o in broadcast.occurrences],
        state=state,
        limit=limit,
        offset=offset,
    )
    return Page(items=[DeliveryRead.model_validate(d) for d in items], total=total)
