"""Broadcasts: create, read, reach."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status

from api.deps import CurrentUser, ServicesDep, SessionDep, SettingsDep, require_roles
from api.routes.common import Limit, Offset, Page
from core.models import Role, User
from devices import service as device_service
from devices.schemas import DeliveryRead
from scheduler import service as scheduler_service
from scheduler.exceptions import BroadcastError, Forbidden, NotFound
from scheduler.schemas import BroadcastCreate, BroadcastRead
from tts.audio import AudioError
from tts.engines import EngineError
from tts.text import TextError

router = APIRouter(prefix="/api/v1/broadcasts", tags=["broadcasts"])

Author = Annotated[User, Depends(require_roles(Role.staff, Role.approver))]


def _load(session, broadcast_id: int, user: User):
    try:
        broadcast = scheduler_service.get_broadcast(session=session, broadcast_id=broadcast_id)
    except NotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    try:
        scheduler_service.check_scope(user=user, area_codes=broadcast.target_areas, devices=[])
    except Forbidden as exc:
        raise HTTPException(status_code=403, detail=str(exc)) from None
    return broadcast


@router.post("", status_code=status.HTTP_201_CREATED)
def create_broadcast(
    body: BroadcastCreate, session: SessionDep, settings: SettingsDep, services: ServicesDep, user: Author
) -> BroadcastRead:
    """Synthesise a notice and schedule it for the given areas and speakers."""
    try:
        broadcast = scheduler_service.create_broadcast(
            session=session,
            settings=settings,
            user=user,
            title=body.title,
            text=body.text,
            areas=body.areas,
            devices=body.devices,
            start_at=body.start_at,
            priority=body.priority,
            volume=body.volume,
            voice=body.voice,
        )
    except BroadcastError as exc:
        raise HTTPException(
            status_code=422, detail=[{"loc": ["body", exc.field], "msg": exc.message, "type": "value_error"}]
        ) from None
    except Forbidden as exc:
        raise HTTPException(status_code=403, detail=str(exc)) from None
    except TextError as exc:
        raise HTTPException(
            status_code=422, detail=[{"loc": ["body", "text"], "msg": str(exc), "type": "value_error"}]
        ) from None
    except (EngineError, AudioError) as exc:
        raise HTTPException(status_code=503, detail=f"speech synthesis failed: {exc}") from None
    session.commit()  # the dispatch job must find it
    for occ in broadcast.occurrences:
        services.runner.schedule(occ)
    return BroadcastRead.model_validate(broadcast)


@router.get("")
def list_broadcasts(
    session: SessionDep, user: CurrentUser, limit: Limit = 50, offset: Offset = 0
) -> Page[BroadcastRead]:
    """Broadcasts, newest first (within the user's area)."""
    items, total = scheduler_service.list_broadcasts(session=session, user=user, limit=limit, offset=offset)
    return Page(items=[BroadcastRead.model_validate(b) for b in items], total=total)


@router.get("/{broadcast_id}")
def get_broadcast(broadcast_id: int, session: SessionDep, user: CurrentUser) -> BroadcastRead:
    """One broadcast with its occurrences."""
    return BroadcastRead.model_validate(_load(session, broadcast_id, user))


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
    return scheduler_service.reach(session=session, broadcast=_load(session, broadcast_id, user), level=level)


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
    broadcast = _load(session, broadcast_id, user)
    items, total = device_service.list_deliveries(
        session=session,
        occurrence_ids=[o.id for o in broadcast.occurrences],
        state=state,
        limit=limit,
        offset=offset,
    )
    return Page(items=[DeliveryRead.model_validate(d) for d in items], total=total)
