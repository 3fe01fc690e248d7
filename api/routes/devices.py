"""The speaker registry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from api.deps import CurrentUser, SessionDep, require_roles
from api.routes.common import Limit, Offset, Page
from core.models import Role
from devices import service as device_service
from devices.schemas import DeviceCreate, DeviceRead

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])


@router.get("")
def list_devices(
    session: SessionDep,
    _user: CurrentUser,
    area: Annotated[
        str | None, Query(pattern=r"^\d{12}$", description="Area code; devices under it.")
    ] = None,
    online: Annotated[
        bool | None, Query(description="Only online (true) or offline (false) speakers.")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[DeviceRead]:
    """Speakers, filtered by area and online state."""
    items, total = device_service.list_devices(
        session=session, area_code=area, online=online, limit=limit, offset=offset
    )
    return Page(items=[DeviceRead.model_validate(d) for d in items], total=total)


@router.post("", status_code=status.HTTP_201_CREATED)
def register_device(
    body: DeviceCreate,
    session: SessionDep,
    _user: Annotated[object, Depends(require_roles(Role.operator))],
) -> DeviceRead:
    """Add (or update) a speaker."""
    try:
        device = device_service.register(
            session=session, device_id=body.id, name=body.name, area_code=body.area_code, model=body.model
        )
    except device_service.DeviceError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return DeviceRead.model_validate(device)


@router.get("/{device_id}")
def get_device(device_id: str, session: SessionDep, _user: CurrentUser) -> DeviceRead:
    """One speaker."""
    device = device_service.get(session=session, device_id=device_id)
    if device is None:
        raise HTTPException(status_code=404, detail=f"no device {device_id}")
    return DeviceRead.model_validate(device)
