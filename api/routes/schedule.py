"""What airs where (with conflicts), quiet hours per area, and stopping everything in an area."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Body, Path, Query

from api.deps import CurrentUser, SenderDep, SessionDep, SettingsDep
from api.routes.common import AUTHED, BAD_BODY, UNAVAILABLE, known_area
from core.clock import utcnow
from core.errors import InvalidInput
from scheduler import conflicts, flows, quiet, view
from scheduler.schemas import AiringRead, ConflictRead, QuietHoursIn, QuietHoursRead, Review, ScheduleRead

router = APIRouter(prefix="/api/v1", tags=["schedule"], responses=AUTHED)

AreaCode = Annotated[str, Path(pattern=r"^\d{12}$", description="12-digit area code.")]
DEFAULT_VIEW = timedelta(days=7)
YEARS = (1970, 9000)  # times outside are refused: no airing lies there, and 9999 + 7 days overflows
WHEN_MAX = 40  # characters of a `from`/`to` value; an ISO 8601 time with offset is at most 32


def _when(value: str | None, field: str, zone: ZoneInfo, *, end: bool) -> datetime | None:
    """A `from`/`to` value: an ISO 8601 time with offset, or a plain date meaning the whole day in
    the county's time zone (`from`: its first instant; `to`: the first instant of the next day)."""
    if value is None:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            if not YEARS[0] <= day.year <= YEARS[1]:
                raise InvalidInput(field, f"a year from {YEARS[0]} to {YEARS[1]}")
            return datetime.combine(day + timedelta(days=1 if end else 0), time(), zone)
        moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise InvalidInput(field, "expected YYYY-MM-DD or an ISO 8601 time with offset") from None
    if moment.tzinfo is None:
        raise InvalidInput(field, "a time needs its offset (e.g. +08:00); or give a plain date")
    if not YEARS[0] <= moment.year <= YEARS[1]:
        raise InvalidInput(field, f"a year from {YEARS[0]} to {YEARS[1]}")
    return moment


@router.get("/schedule")
def schedule(
    session: SessionDep,
    user: CurrentUser,
    area: Annotated[str, Query(pattern=r"^\d{12}$", description="Area code: what airs on its speakers.")],
    settings: SettingsDep,
    start: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=WHEN_MAX,
            description="ISO 8601 time with offset, or a date (YYYY-MM-DD: from the start of that day "
            "in the county's time zone); default now.",
        ),
    ] = None,
    end: Annotated[
        str | None,
        Query(
            alias="to",
            max_length=WHEN_MAX,
            description="ISO 8601 time with offset, or a date (up to the end of that day); default "
            "`from` + 7 days; at most 31 days after `from`.",
        ),
    ] = None,
) -> ScheduleRead:
    """Every airing reaching the area's speakers in [from, to) — planned, or projected from rules,
    including broadcasts awaiting approval — and the pairs that overlap on shared speakers."""
    known_area(session, area)
    flows.area_of(session=session, user=user, area_code=area)
    zone = ZoneInfo(settings.scheduler.timezone)
    begin: datetime = _when(start, "from", zone, end=False) or utcnow()
    finish: datetime = _when(end, "to", zone, end=True) or begin + DEFAULT_VIEW
    items = view.airings(session=session, area_codes=[area], start=begin, end=finish)
    return ScheduleRead(
        area=area,
        start=begin,
        end=finish,
        items=[AiringRead(**{**a.__dict__, "areas": list(a.areas)}) for a in items],
        conflicts=[ConflictRead(**c.describe()) for c in conflicts.find(items)],
    )


@router.post("/areas/{code}/stop", responses={**BAD_BODY, **UNAVAILABLE})
def stop_area(
    code: AreaCode,
    session: SessionDep,
    sender: SenderDep,
    user: CurrentUser,
    body: Annotated[Review | None, Body()] = None,
) -> dict:
    """Stop everything playing or about to play on the area's speakers, now. Future airings stay
    planned (cancel a broadcast to drop them)."""
    known_area(session, code)
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
    known_area(session, code)
    flows.area_of(session=session, user=user, area_code=code)
    return _quiet_read(session, settings, code)


@router.put("/areas/{code}/quiet-hours", responses=BAD_BODY)
def set_quiet_hours(
    code: AreaCode, body: QuietHoursIn, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> QuietHoursRead:
    """Give an area its own quiet hours (start == end: none); nulls: inherit again."""
    known_area(session, code)
    flows.set_quiet_hours(session=session, user=user, area_code=code, start=body.start, end=body.end)
    return _quiet_read(session, settings, code)
