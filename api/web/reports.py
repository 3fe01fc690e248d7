"""Reach report pages (per broadcast, per day/week/month) as tables and charts, CSV and XLSX.

The figures are exactly those of the JSON API: a broadcast's from `reports.reach.of_broadcast` (what
GET /api/v1/broadcasts/{id}/reach returns), a period's from `reports.service.period_report` (what
GET /api/v1/reports/reach returns). A broadcast's chart is inline SVG drawn on the server; a
period's charts are drawn in the browser (static/reports.js) from GET /api/v1/reports/reach with
the same query, fetched with the session cookie. Tables and exports are rendered on the server.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.deps import SessionDep, SettingsDep
from api.routes.common import Id
from api.web import render
from api.web.console import area_choices, load_broadcast
from api.web.session import PageError, WebUser, check_area, home_area
from reports import export, reach
from reports import flows as report_flows
from reports import service as report_service
from reports.schemas import FIRST_DAY, LAST_DAY

router = APIRouter(prefix="/console", include_in_schema=False)

PERIOD_LABELS = {"day": "日报", "week": "周报", "month": "月报"}
LEVEL_LABELS = {"township": "按乡镇", "village": "按村"}
BAR_W = 520  # width of the longest bar in the charts, in SVG units (static/reports.js: the same)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def area_bars(by_area: list[dict]) -> dict:
    """Geometry of a horizontal stacked bar chart: played / failed / no report / other per area."""
    widest = max((e["targeted"] for e in by_area), default=0) or 1
    rows = []
    for e in by_area:
        segments, x = [], 0.0
        for key in ("played", "failed", "no_report", "other"):
            n = e[key]
            width = BAR_W * n / widest
            if n > 0:
                segments.append({"key": key, "x": round(x, 1), "w": round(width, 1), "n": n})
            x += width
        rows.append({"name": e["name"], "segments": segments, "end": round(x, 1), "rate": e["reach_rate"]})
    return {"rows": rows, "height": 28 * len(rows) + 10}


def _download(data: bytes, filename: str, media_type: str) -> Response:
    return Response(
        data,
        media_type=media_type,
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"},
    )


# ---------------------------------------------------------------- per broadcast


def _broadcast_reach(session, user, broadcast_id: int, level: str | None):
    broadcast = load_broadcast(session, user, broadcast_id)
    if level not in (None, "township", "village"):
        raise PageError(422, "统计层级只能是“按乡镇”或“按村”。")
    return broadcast, reach.of_broadcast(session=session, broadcast=broadcast, level=level)


@router.get("/items/{broadcast_id}/reach")
def broadcast_report(
    request: Request, session: SessionDep, user: WebUser, broadcast_id: Id, level: str | None = None
):
    broadcast, figures = _broadcast_reach(session, user, broadcast_id, level)
    query = urlencode({"level": level} if level else {})
    return render.page(
        request,
        "reach.html",
        user,
        b=broadcast,
        r=figures,
        chart=area_bars(figures["by_area"]),
        level=figures["by_area"][0]["level"] if figures["by_area"] else (level or "village"),
        level_labels=LEVEL_LABELS,
        export_base=f"/console/items/{broadcast_id}/reach",
        query=query,
    )


@router.get("/items/{broadcast_id}/reach.{fmt}")
def broadcast_export(
    session: SessionDep, user: WebUser, broadcast_id: Id, fmt: str, level: str | None = None
):
    broadcast, figures = _broadcast_reach(session, user, broadcast_id, level)
    headings, rows = export.table(figures)
    name = f"到达报告-广播{broadcast.id}"
    if fmt == "csv":
        return _download(export.to_csv(headings, rows), f"{name}.csv", "text/csv; charset=utf-8")
    if fmt == "xlsx":
        return _download(export.to_xlsx(headings, rows, title=f"广播{broadcast.id}"), f"{name}.xlsx", XLSX)
    raise PageError(404, "只支持导出 CSV 或 XLSX。")


# ---------------------------------------------------------------- per period


def _period_report(session, settings, user, area, period, day, level):
    area = area or home_area(session, user)
    region = check_area(session, user, area)
    zone = ZoneInfo(settings.scheduler.timezone)
    if period not in report_service.PERIODS:
        raise PageError(422, "报告周期只能是日、周或月。")
    if level not in (None, "", "township", "village"):
        raise PageError(422, "统计层级只能是“按乡镇”或“按村”。")
    try:
        chosen = date.fromisoformat(day) if day else datetime.now(zone).date()
    except ValueError:
        raise PageError(422, f"日期“{day}”格式不对，应为 年-月-日，如 2026-11-25。") from None
    if not FIRST_DAY <= chosen <= LAST_DAY:
        raise PageError(422, f"日期应在 {FIRST_DAY} 到 {LAST_DAY} 之间。")
    span = report_service.period_of(kind=period, day=chosen)
    figures = report_flows.period_reach(
        session=session, area_code=area, period=span, zone=zone, level=level or None
    )
    return region, chosen, figures


@router.get("/reports")
def period_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: WebUser,
    area: Annotated[str | None, Query()] = None,
    period: Annotated[str, Query()] = "day",
    day: Annotated[str | None, Query(alias="date")] = None,
    level: Annotated[str | None, Query()] = None,
):
    region, chosen, figures = _period_report(session, settings, user, area, period, day, level)
    params = {"area": region.code, "period": period, "date": chosen.isoformat()}
    if level:
        params["level"] = level
    return render.page(
        request,
        "reports.html",
        user,
        region=region,
        choices=area_choices(session, user, region.code),
        r=figures,
        period=period,
        chosen=chosen.isoformat(),
        level=figures["level"],
        period_labels=PERIOD_LABELS,
        level_labels=LEVEL_LABELS,
        query=urlencode(params),
        # the charts: drawn in the browser from the JSON API, same query (static/reports.js)
        chart_src=f"/api/v1/reports/reach?{urlencode(params)}",
    )


@router.get("/reports/export.{fmt}")
def period_export(
    session: SessionDep,
    settings: SettingsDep,
    user: WebUser,
    fmt: str,
    area: Annotated[str | None, Query()] = None,
    period: Annotated[str, Query()] = "day",
    day: Annotated[str | None, Query(alias="date")] = None,
    level: Annotated[str | None, Query()] = None,
):
    region, chosen, figures = _period_report(session, settings, user, area, period, day, level)
    headings, rows = export.table(figures)
    name = f"到达{PERIOD_LABELS[period]}-{region.name}-{figures['first']}"
    if fmt == "csv":
        return _download(export.to_csv(headings, rows), f"{name}.csv", "text/csv; charset=utf-8")
    if fmt == "xlsx":
        title = f"{PERIOD_LABELS[period]} {figures['first']}"
        return _download(export.to_xlsx(headings, rows, title=title), f"{name}.xlsx", XLSX)
    raise PageError(404, "只支持导出 CSV 或 XLSX。")
