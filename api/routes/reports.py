"""Reach over a day, an ISO week or a calendar month, by township or village.

The figures are `reports.service.period_report`'s: the same the console's report page, its table,
its CSV/XLSX exports and its charts show (the charts fetch this endpoint).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.security import OAuth2PasswordBearer

from api.deps import ServicesDep, SessionDep, SettingsDep, get_current_user
from api.routes.common import AUTHED, area_param, known_area
from api.web import session as web_session
from core import regions
from core.models import User
from reports import flows as report_flows
from reports import service as report_service
from reports.schemas import FIRST_DAY, LAST_DAY, PeriodReachRead

router = APIRouter(prefix="/api/v1/reports", tags=["reports"], responses=AUTHED)

_optional_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


def reader(
    request: Request,
    services: ServicesDep,
    session: SessionDep,
    token: Annotated[str | None, Depends(_optional_bearer)],
) -> User:
    """The bearer token's user or, without a token, the console's logged-in user.

    The console's report page draws its charts from this endpoint in the browser, with its session
    cookie. Only read-only GETs accept the cookie: another site can make the browser send one but
    cannot read the answer (no CORS), and nothing a user sees changes.
    """
    if token is not None:
        return get_current_user(token, services, session)
    try:
        return web_session.current_user(request, session, services)
    except web_session.LoginRequired:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="not authenticated: get a token at POST /api/v1/auth/token (or log in to the console)",
            headers={"WWW-Authenticate": "Bearer"},
        ) from None


Reader = Annotated[User, Depends(reader)]


@router.get("/reach")
def period_reach(
    session: SessionDep,
    settings: SettingsDep,
    user: Reader,
    area: Annotated[
        str | None,
        Query(pattern=r"^\d{12}$", description="Area code: speakers under it. Absent: your area."),
    ] = None,
    period: Annotated[
        Literal["day", "week", "month"], Query(description="A day, an ISO week (Monday first), a month.")
    ] = "day",
    day: Annotated[
        date | None,
        Query(
            alias="date", ge=FIRST_DAY, le=LAST_DAY, description="YYYY-MM-DD in the period; absent: today."
        ),
    ] = None,
    level: Annotated[
        Literal["township", "village"] | None,
        Query(description="Breakdown level; absent: township for a county, else village."),
    ] = None,
) -> PeriodReachRead:
    """Reach of every airing that started in the period on the area's speakers: targeted, played,
    failed, no report, reach rate, population reached; per area and per day (see docs/reach.md)."""
    code = area_param(session, user, area) or _first_county(session)
    region = known_area(session, code)
    zone = ZoneInfo(settings.scheduler.timezone)
    span = report_service.period_of(kind=period, day=day or datetime.now(zone).date())
    figures = report_flows.period_reach(
        session=session, area_code=code, period=span, zone=zone, level=level
    )
    return PeriodReachRead.model_validate({**figures, "area_name": region.name})


def _first_county(session) -> str:
    """For a user bound to no area: the first top-level area, as the console's report page does."""
    roots, _ = regions.list_children(session=session, parent_code=None, limit=1)
    if not roots:
        raise HTTPException(status_code=404, detail="no areas imported yet")
    return roots[0].code
