"""What airs where (with conflicts), quiet hours per area, and stopping everything in an area."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query
from pydantic import AwareDatetime

from api.deps import CurrentUser, ServicesDep, SessionDep, SettingsDep, require_roles
from api.routes.broadcasts import guarded
from core import regions
from core.clock import utcnow
from core.models import Region, Role, User
from devices.transport import LinkError
from scheduler import audit, conflicts, quiet
from scheduler import service as scheduler_service
from scheduler.schemas import AiringRead, ConflictRead, QuietHoursIn, QuietHoursRead, Review, ScheduleRead

router = APIRouter(prefix="/api/v1", tags=["schedule"])

AreaCode = Annotated[str, Path(pattern=r"^\d{12}$", description="12-digit area code.")]
Approver = Annotated[User, Depends(require_roles(Role.approver))]
DEFAULT_VIEW = timedelta(days=7)


def _area(session, user: User, code: str) -> str:
    if session.get(Region, code) is None:
        raise HTTPException(status_code=404, detail=f"no area {code}")
    if user.area_code is not None and not regions.is_under(code, user.area_code):
        raise HTTPException(status_code=403, detail=f"area {code} is outside your area {user.area_code}")
    return code


@router.get("/schedule")
def schedule(
    session: SessionDep,
    user: CurrentUser,
    area: Annotated[str, Query(pattern=r"^\d{12}$", description="Area code: what airs on its speakers.")],
    start: Annotated[
        AwareDatetime | None, Query(alias="from", description="ISO 8601 with offset; default now.")
    ] = None,
    end: Annotated[
        AwareDatetime | None, Query(alias="to", description="Default `from` + 7 days; at most 31 days.")
    ] = None,
) -> ScheduleRead:
    """Every airing reaching the area's speakers in [from, to) — planned, or projected from rules,
    including broadcasts awaiting approval — and the pairs that overlap on shared speakers."""
    _area(session, user, area)
    begin: datetime = start or utcnow()
    finish: datetime = end or begin + DEFAULT_VIEW
    items = guarded(
        lambda: scheduler_service.airings(session=session, area_codes=[area], start=begin, end=finish)
    )
    return ScheduleRead(
        area=area,
        start=begin,
        end=finish,
        items=[AiringRead(**{**a.__dict__, "areas": list(a.areas)}) for a in items],
        conflicts=[ConflictRead(**c.describe()) for c in conflicts.find(items)],
    )


@router.post("/areas/{code}/stop")
def stop_area(
    code: AreaCode,
    session: SessionDep,
    services: ServicesDep,
    user: Approver,
    body: Annotated[Review | None, Body()] = None,
) -> dict:
    """Stop everything playing or about to play on the area's speakers, now. Future airings stay
    planned (cancel a broadcast to drop them)."""
    _area(session, user, code)
    plan = guarded(
        lambda: scheduler_service.stop_area(
            session=session, user=user, area_code=code, comment=body and body.comment
        )
    )
    session.commit()
    try:
        sent = scheduler_service.send_area_stop(link=services.link, plan=plan, area_code=code)
    except LinkError as exc:
        raise HTTPException(status_code=503, detail=f"the stop could not be sent: {exc}") from None
    return {"area": code, "stopped_occurrences": plan.occurrence_ids, "commands_sent": sent}


def _quiet_read(session, settings, code: str) -> QuietHoursRead:
    window, own = quiet.get(session=session, settings=settings, area_code=code)
    default = window.area_code == code and not own
    return QuietHoursRead(
        area=code,
        start=window.start.strftime("%H:%M"),
        end=window.end.strftime("%H:%M"),
        own=own,
        from_area="default" if default else window.area_code,
    )


@router.get("/areas/{code}/quiet-hours")
def get_quiet_hours(
    code: AreaCode, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> QuietHoursRead:
    """The quiet hours that apply to an area (its own, inherited, or the default)."""
    _area(session, user, code)
    return _quiet_read(session, settings, code)


@router.put("/areas/{code}/quiet-hours")
def set_quiet_hours(
    code: AreaCode, body: QuietHoursIn, session: SessionDep, settings: SettingsDep, user: Approver
) -> QuietHoursRead:
    """Give an area its own quiet hours (start == end: none); nulls: inherit again."""
    _area(session, user, code)
    if (body.start is None) != (body.end is None):
        raise HTTPException(
            status_code=422,
            detail=[{"loc": ["body", "end" if body.end is None else "start"], "msg": "give both or neither",
                     "type": "value_error"}],
        )  # fmt: skip
    try:
        start = quiet.parse_time(body.start, "start") if body.start else None
        end = quiet.parse_time(body.end, "end") if body.end else None
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]
        raise HTTPException(
            status_code=422, detail=[{"loc": ["body", field], "msg": str(exc), "type": "value_error"}]
        ) from None
    quiet.set_for_area(session=session, user=user, area_code=code, start=start, end=end)
    audit.record(
        session=session, user=user, action="quiet_hours", object_type="area", object_id=code,
        detail={"start": body.start, "end": body.end},
    )  # fmt: skip
    session.flush()
    return _quiet_read(session, settings, code)
