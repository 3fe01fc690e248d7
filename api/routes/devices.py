"""The speaker registry, scoped to the user's area (api/deps.py: `area_in_scope`, `device_in_scope`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import CurrentUser, SessionDep, device_in_scope
from api.routes.common import AUTHED, BAD_BODY, Limit, Offset, Page, area_param
from devices import flows as device_flows
from devices import service as device_service
from devices.schemas import DeviceCreate, DeviceRead

router = APIRouter(prefix="/api/v1/devices", tags=["devices"], responses=AUTHED)


@router.get("")
def list_devices(
    session: SessionDep,
    user: CurrentUser,
    area: Annotated[
        str | None,
        Query(pattern=r"^\d{12}$", description="Area code; devices under it. Absent: your area."),
    ] = None,
    online: Annotated[
        bool | None, Query(description="Only online (true) or offline (false) speakers.")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[DeviceRead]:
    """Speakers under an area (403 outside yours), filtered by online state."""
    items, total = device_service.list_devices(
        session=session, area_code=area_param(session, user, area), online=online, limit=limit, offset=offset
    )
    return Page(items=[DeviceRead.model_validate(d) for d in items], total=total)


@router.post("", status_code=status.HTTP_201_CREATED, responses=BAD_BODY)
def register_device(body: DeviceCreate, session: SessionDep, user: CurrentUser) -> DeviceRead:
    """Add (or update) a speaker. Both its new area and, for a known speaker, its current one must
    lie in your area: an operator neither places nor takes away another area's speakers."""
    device = device_flows.register_device(session=session, user=user, device_in=body)
    return DeviceRead.model_validate(device)


@router.get("/{device_id}")
def get_device(device_id: str, session: SessionDep, user: CurrentUser) -> DeviceRead:
    """One speaker (403 outside your area)."""
    return DeviceRead.model_validate(device_in_scope(session, user, device_id))
