"""Public village pages behind each village's QR code (一村一码), the codes, and a printable sheet.

`/v/{area_code}` needs no login and shows only announcements that have aired in the village
(title, date, text, audio): no author, comment, speaker or figure, nothing scheduled or pending.
"""

from __future__ import annotations

import io

import segno
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import SessionDep, SettingsDep
from api.web import render
from api.web.session import PageError, WebUser, check_area
from core import regions
from core.models import Region, RegionLevel
from reports import public

router = APIRouter(include_in_schema=False)

QR_ERROR = "m"  # 15% of the code may be damaged (a sheet on a village notice board)
QR_PNG_SCALE = 8
PUBLIC_CACHE = "public, max-age=60"


def village_url(settings, code: str) -> str:
    return f"{settings.public_url.rstrip('/')}/v/{code}"


def _village(session, code: str) -> Region:
    try:
        level = regions.validate_code(code)
    except regions.InvalidRegionCode:
        raise PageError(404, "没有这个村。") from None
    region = session.get(Region, code) if level is RegionLevel.village else None
    if region is None:
        raise PageError(404, "没有这个村。")
    return region


@router.get("/v/{code}")
def village_page(request: Request, session: SessionDep, code: str):
    village = _village(session, code)
    township = session.get(Region, village.parent_code) if village.parent_code else None
    items = public.aired_in(session=session, village_code=code)
    response = render.page(request, "village.html", None, village=village, township=township, items=items)
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


@router.get("/v/{code}/qr.svg")
def village_qr_svg(session: SessionDep, settings: SettingsDep, code: str) -> Response:
    _village(session, code)
    out = io.BytesIO()
    segno.make(village_url(settings, code), error=QR_ERROR).save(out, kind="svg", scale=4, border=2)
    return Response(out.getvalue(), media_type="image/svg+xml", headers={"Cache-Control": PUBLIC_CACHE})


@router.get("/v/{code}/qr.png")
def village_qr_png(session: SessionDep, settings: SettingsDep, code: str) -> Response:
    _village(session, code)
    out = io.BytesIO()
    segno.make(village_url(settings, code), error=QR_ERROR).save(
        out, kind="png", scale=QR_PNG_SCALE, border=2
    )
    return Response(out.getvalue(), media_type="image/png", headers={"Cache-Control": PUBLIC_CACHE})


@router.get("/console/qr/{code}")
def qr_sheet(request: Request, session: SessionDep, settings: SettingsDep, user: WebUser, code: str):
    """Every village of a township (or the village itself), one code each, laid out for A4."""
    region = check_area(session, user, code)
    if region.level is RegionLevel.county:
        raise PageError(422, "请选择一个乡镇打印（全县村数太多，请按乡镇分批打印）。")
    villages = regions.descendant_villages(session=session, code=code)
    cards = []
    for village in villages:
        out = io.BytesIO()
        segno.make(village_url(settings, village.code), error=QR_ERROR).save(
            out, kind="svg", scale=3, border=2, xmldecl=False, svgns=True, nl=False, omitsize=True
        )
        cards.append(
            {"v": village, "svg": out.getvalue().decode(), "url": village_url(settings, village.code)}
        )
    return render.page(request, "qr_sheet.html", user, region=region, cards=cards)


@router.get("/console/qr")
def qr_index(request: Request, session: SessionDep, user: WebUser):
    """Pick a township to print."""
    from api.web.console import area_choices
    from api.web.session import home_area

    root = home_area(session, user)
    townships = [r for r in area_choices(session, user, root) if r.level is RegionLevel.township]
    return render.page(request, "qr_index.html", user, townships=townships)
