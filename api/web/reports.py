"""Reach report pages (per broadcast, per day/week/month) as tables and SVG charts, CSV and XLSX.

The figures are exactly those of the JSON API: a broadcast's from `scheduler.service.reach` (what
GET /api/v1/broadcasts/{id}/reach returns), a period's from `reports.service.period_report`.
Charts are drawn on the server as inline SVG: no script, no CDN, and they print.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.deps import SessionDep, SettingsDep
from api.web import render
from api.web.console import area_choices, load_broadcast
from api.web.session import PageError, WebUser, check_area, home_area
from reports import export
from reports import service as report_service
from scheduler import service as scheduler_service

router = APIRouter(prefix="/console", include_in_schema=False)

PERIOD_LABELS = {"day": "日报", "week": "周报", "month": "月报"}
LEVEL_LABELS = {"township": "按乡镇", "village": "按村"}
BAR_W = 520  # width of the longest bar in the charts, in SVG units
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def area_bars(by_area: list[dict]) -> dict:
    """Geometry of a horizontal stacked bar chart: played / failed / no report / other per area."""
    widest = max((e["targeted"] for e in by_area), default=0) or 1
    rows = []
    for e in by_area:
        segments, x = [], 0.0
        other = e["targeted"] - e["played"] - e["failed"] - e["no_report"]
        for key, n in (("played", e["played"]), ("failed", e["failed"]), ("no_report", e["no_report"]),
                       ("other", other)):  # fmt: skip
            width = BAR_W * n / widest
            if n > 0:
                segments.append({"key": key, "x": round(x, 1), "w": round(width, 1), "n": n})
            x += width
        rows.append({"name": e["name"], "segments": segments, "end": round(x, 1), "rate": e["reach_rate"]})
    return {"rows": rows, "height": 28 * len(rows) + 10}


def day_bars(by_day: list[dict]) -> dict:
    """Geometry of a column chart: targeted (light) and played (dark) per day."""
    tallest = max((d["targeted"] for d in by_day), default=0) or 1
    step = min(60.0, 640 / max(len(by_day), 1))
    cols = []
    for i, d in enumerate(by_day):
        cols.append(
            {"x": round(40 + i * step, 1), "w": round(step * 0.7, 1), "day": d["day"][5:],
             "t": round(160 * d["targeted"] / tallest, 1), "p": round(160 * d["played"] / tallest, 1),
             "targeted": d["targeted"], "played": d["played"]}
        )  # fmt: skip
    return {"cols": cols, "width": round(60 + len(by_day) * step, 1), "tallest": tallest}


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
    return broadcast, scheduler_service.reach(session=session, broadcast=broadcast, level=level)


@router.get("/items/{broadcast_id}/reach")
def broadcast_report(
    request: Request, session: SessionDep, user: WebUser, broadcast_id: int, level: str | None = None
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
    session: SessionDep, user: WebUser, broadcast_id: int, fmt: str, level: str | None = None
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
    span = report_service.period_of(kind=period, day=chosen)
    figures = report_service.period_report(
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
        chart=area_bars(figures["by_area"]),
        days=day_bars(figures["by_day"]),
        query=urlencode(params),
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
