"""The speaker fleet: health by area, alarms, operator commands with their outcome, status history.

Registered before api/routes/devices.py so `/api/v1/devices/health` is not read as a device id.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import CurrentUser, SenderDep, SessionDep, area_in_scope, device_in_scope
from api.routes.common import AUTHED, BAD_BODY, UNAVAILABLE, Id, Limit, Offset, Page, area_param, known_area
from core.errors import NotFound
from devices import fleet
from devices import flows as device_flows
from devices.schemas import (
    AlarmRead,
    AreaCommandCreate,
    AreaHealthRead,
    CommandResultRead,
    Credentials,
    DeviceCommandCreate,
    DeviceCommandRead,
    FleetHealth,
    StatusRead,
)

router = APIRouter(prefix="/api/v1/devices", tags=["fleet"], responses=AUTHED)

AreaQuery = Annotated[str | None, Query(pattern=r"^\d{12}$", description="Area code; absent = your area.")]


@router.get("/health")
def fleet_health(session: SessionDep, user: CurrentUser, area: AreaQuery = None) -> FleetHealth:
    """Online rate and counts for an area and for each township (of a county) or village (of a township)."""
    total, children = fleet.health(session=session, area_code=area_param(session, user, area))
    return FleetHealth(
        area=AreaHealthRead.model_validate(total),
        children=[AreaHealthRead.model_validate(c) for c in children],
    )


@router.get("/alarms")
def list_alarms(
    session: SessionDep,
    user: CurrentUser,
    area: AreaQuery = None,
    active: Annotated[bool | None, Query(description="Only active (true) or cleared (false) alarms.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[AlarmRead]:
    """Alarms (offline, failures, clock_drift, rejected_commands), newest first."""
    items, total = fleet.list_alarms(
        session=session, area_code=area_param(session, user, area), active=active, limit=limit, offset=offset
    )
    out = []
    for alarm in items:
        read = AlarmRead.model_validate(alarm)
        read.active = alarm.cleared_at is None
        out.append(read)
    return Page(items=out, total=total)


def _outcome(session, command_id: int) -> DeviceCommandRead:
    outcome = fleet.command_outcome(session=session, command_id=command_id)
    if outcome is None:
        raise NotFound(f"no command {command_id}")
    c = outcome.command
    return DeviceCommandRead(
        id=c.id, cmd_id=c.cmd_id, type=c.type, scope=c.scope, target=c.target, params=c.params,
        created_at=c.created_at, expires_at=c.expires_at, sent=c.sent, error=c.error, targeted=c.targeted,
        answered=outcome.answered, succeeded=outcome.succeeded, failed=outcome.failed,
        no_answer=outcome.no_answer,
        results=[CommandResultRead.model_validate(r) for r in outcome.results],
    )  # fmt: skip


@router.post("/commands", status_code=status.HTTP_202_ACCEPTED, responses={**BAD_BODY, **UNAVAILABLE})
def send_area_command(
    body: AreaCommandCreate, session: SessionDep, sender: SenderDep, user: CurrentUser
) -> DeviceCommandRead:
    """Send set_volume, test_tone, stop or sync to every speaker under an area (one signed publish)."""
    known_area(session, body.area)
    row = device_flows.send_command(
        session=session, sender=sender, user=user, command_in=body, area_code=body.area
    )
    return _outcome(session, row.id)


@router.get("/commands/{command_id}")
def get_command(command_id: Id, session: SessionDep, user: CurrentUser) -> DeviceCommandRead:
    """A command and its outcome: which speakers answered, succeeded or failed."""
    out = _outcome(session, command_id)
    area = out.target if out.scope == "area" else device_in_scope(session, user, out.target).area_code
    area_in_scope(user, area)
    return out


@router.post(
    "/{device_id}/commands", status_code=status.HTTP_202_ACCEPTED, responses={**BAD_BODY, **UNAVAILABLE}
)
def send_device_command(
    device_id: str, body: DeviceCommandCreate, session: SessionDep, sender: SenderDep, user: CurrentUser
) -> DeviceCommandRead:
    """Send set_volume, test_tone, stop or sync to one speaker."""
    row = device_flows.send_command(
        session=session, sender=sender, user=user, command_in=body, device_id=device_id
    )
    return _outcome(session, row.id)


@router.get("/{device_id}/status-history")
def status_history(
    device_id: str, session: SessionDep, user: CurrentUser, limit: Limit = 100, offset: Offset = 0
) -> Page[StatusRead]:
    """A speaker's status history (on change, else every 10 minutes), newest first."""
    device_in_scope(session, user, device_id)
    items, total = fleet.status_history(session=session, device_id=device_id, limit=limit, offset=offset)
    return Page(items=[StatusRead.model_validate(s) for s in items], total=total)


@router.post("/{device_id}/credentials")
def issue_credentials(device_id: str, session: SessionDep, user: CurrentUser) -> Credentials:
    """A new MQTT password for the speaker (shown once); regenerate the Mosquitto files afterwards."""
    username, password = device_flows.issue_credentials(session=session, user=user, device_id=device_id)
    return Credentials(device_id=device_id, username=username, password=password)
