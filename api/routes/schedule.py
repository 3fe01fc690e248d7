"""What airs where (with conflicts), quiet hours per area, and stopping everything in an area."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query
from pydantic import AwareDatetime

from api.deps import CurrentUser, SenderDep, SessionDep, SettingsDep
from core.clock import utcnow
from scheduler import conflicts, flows, quiet, view
from scheduler.schemas import AiringRead, ConflictRead, QuietHoursIn, QuietHoursRead, Review, ScheduleRead

router = APIRouter(prefix="/api/v1", tags=["schedule"])

AreaCode = Annotated[str, Path(pattern=r"^\d{12}$", description="12-digit area code.")]
DEFAULT_VIEW = timedelta(days=7)


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
    flows.area_of(session=session, user=user, area_code=area)
    begin: datetime = start or utcnow()
    finish: datetime = end or begin + DEFAULT_VIEW
    items = view.airings(session=session, area_codes=[area], start=begin, end=finish)
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
    sender: SenderDep,
    user: CurrentUser,
    body: Annotated[Review | None, Body()] = None,
) -> dict:
    """Stop everything playing or about to play on the area's speakers, now. Future airings stay
    planned (cancel a broadcast to drop them)."""
    done = flows.stop_area(
        session=session, sender=sender, user=user, area_code=code, comment=body and body.comment
    )
    return {
        "area": code, "stopped_occurrences": done.stopped_occurrences, "commands_sent": done.commands_sent
    }


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
    flows.area_of(session=session, user=user, area_code=code)
    return _quiet_read(session, settings, code)


@router.put("/areas/{code}/quiet-hours")
def set_quiet_hours(
    code: AreaCode, body: QuietHoursIn, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> QuietHoursRead:
    """Give an area its own quiet hours (start == end: none); nulls: inherit again."""
    flows.set_quiet_hours(session=session, user=user, area_code=code, start=body.start, end=body.end)
    return _quiet_read(session, settings, code)
