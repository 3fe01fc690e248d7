"""Fleet pages for operators: counts and online rate per township, the speaker list filtered by
state, one speaker's history, and the volume and test-tone buttons (devices.fleet's commands)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse

from api.deps import SenderDep, SessionDep
from api.routes.common import MAX_ID, MAX_PAGE
from api.web import render
from api.web.console import area_choices, area_names
from api.web.messages import page_error
from api.web.session import Csrf, PageError, WebUser, check_area, home_area, require_role
from core.errors import CunxiangError, InvalidInput
from core.models import Role
from devices import fleet as fleet_service
from devices import flows as device_flows
from devices import service as device_service
from devices.schemas import DeviceCommandCreate
from reports import fleet as fleet_report

log = logging.getLogger(__name__)
router = APIRouter(prefix="/console/fleet", include_in_schema=False)

PAGE_SIZE = 50
STATES = {"all": "全部", "online": "在线", "offline": "离线"}
TEST_TONE_S = 3.0


def _counts(session, area: str) -> list[dict]:
    _root, children = fleet_service.health(session=session, area_code=area)
    return [
        {"code": c.code, "name": c.name, "total": c.devices, "online": c.online, "offline": c.offline,
         "rate": c.online_rate, "faulted": c.faulted, "alarmed": c.alarmed}
        for c in children
    ]  # fmt: skip


@router.get("")
def fleet(
    request: Request,
    session: SessionDep,
    user: WebUser,
    area: Annotated[str | None, Query()] = None,
    state: Annotated[str, Query(pattern="^(all|online|offline)$")] = "all",
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
):
    area = area or home_area(session, user)
    region = check_area(session, user, area)
    counts = _counts(session, area)
    online = {"all": None, "online": True, "offline": False}[state]
    devices, total = device_service.list_devices(
        session=session, area_code=area, online=online, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    total_devices = sum(c["total"] for c in counts)
    total_online = sum(c["online"] for c in counts)
    return render.page(
        request,
        "fleet.html",
        user,
        region=region,
        area=area,
        choices=area_choices(session, user, area),
        counts=counts,
        total_devices=total_devices,
        total_online=total_online,
        total_rate=(total_online / total_devices) if total_devices else None,
        devices=devices,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        state=state,
        states=STATES,
        names=area_names(session, [d.area_code for d in devices]),
    )


def _device(session, user, device_id: str):
    device = device_service.get(session=session, device_id=device_id)
    if device is None:
        raise PageError(404, f"没有编号为 {device_id} 的喇叭。")
    check_area(session, user, device.area_code)
    return device


@router.get("/{device_id}")
def device_page(
    request: Request,
    session: SessionDep,
    user: WebUser,
    device_id: str,
    done: str | None = None,
    command: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
):
    device = _device(session, user, device_id)
    statuses, _ = fleet_service.status_history(session=session, device_id=device_id, limit=30, offset=0)
    done_text = {"volume": "音量指令已发送", "test_tone": "测试音指令已发送"}.get(done or "")
    if done_text and command:
        done_text += f"（指令编号 {command}）"
    return render.page(
        request,
        "device.html",
        user,
        d=device,
        area_name=area_names(session, [device.area_code]).get(device.area_code, device.area_code),
        history=fleet_report.device_history(session=session, device_id=device_id),
        statuses=statuses,
        may_command=user.role in (Role.admin, Role.operator),
        done=f"{done_text}。" if done_text else None,
    )


def _send(session, sender, user, device_id: str, command_in: DeviceCommandCreate) -> int:
    """Send the command (devices.flows) and return its id (its outcome: GET /api/v1/devices/commands/{id})."""
    require_role(user, Role.operator)
    _device(session, user, device_id)
    try:
        row = device_flows.send_command(
            session=session, sender=sender, user=user, command_in=command_in, device_id=device_id
        )
    except CunxiangError as exc:
        raise page_error(exc, {InvalidInput: "指令无效：{message}"}) from None
    return row.id


@router.post("/{device_id}/volume", dependencies=[Csrf])
def set_volume(
    session: SessionDep,
    sender: SenderDep,
    user: WebUser,
    device_id: str,
    volume: Annotated[str, Form()] = "",
):
    if not volume.strip().isdigit() or not 0 <= int(volume) <= 100:
        raise PageError(422, "音量应为 0 到 100 的整数。")
    command_in = DeviceCommandCreate(type="set_volume", volume=int(volume))
    command = _send(session, sender, user, device_id, command_in)
    return RedirectResponse(f"/console/fleet/{device_id}?done=volume&command={command}", status_code=303)


@router.post("/{device_id}/test-tone", dependencies=[Csrf])
def test_tone(session: SessionDep, sender: SenderDep, user: WebUser, device_id: str):
    command_in = DeviceCommandCreate(type="test_tone", duration_s=TEST_TONE_S)
    command = _send(session, sender, user, device_id, command_in)
    return RedirectResponse(f"/console/fleet/{device_id}?done=test_tone&command={command}", status_code=303)
