"""Console pages for staff and approvers: compose (with preview), my items, the approval queue,
an item's page (state, history, cancel) and the coming week's schedule per area."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Body, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.deps import PlannerDep, SenderDep, SessionDep, SettingsDep
from api.errors import status_of
from api.routes.common import MAX_PAGE, Id
from api.web import render
from api.web.compose import EMERGENCY, MODES, RATES, REPEATS, WEEKDAY_KEYS, ComposeForm, form_error
from api.web.messages import message_of, page_error
from api.web.session import Csrf, PageError, WebUser, check_area, home_area, require_role
from core import regions
from core.clock import utcnow
from core.errors import Conflict, CunxiangError, Forbidden, InvalidInput, NotFound, Unavailable
from core.models import Region, RegionLevel, Role, User
from reports import reach
from scheduler import audit, flows, view
from scheduler.access import approval_refusal, may_cancel, visible_broadcast
from scheduler.lifecycle import AUDIT_TYPE
from scheduler.models import Broadcast, BroadcastStatus
from tts import flows as tts_flows
from tts import store, voices
from tts.models import AudioAsset

log = logging.getLogger(__name__)
router = APIRouter(prefix="/console", include_in_schema=False)

PAGE_SIZE = 30
AUTHORS = (Role.staff, Role.approver)
DONE_MESSAGES = {
    "created": "已提交。",
    "approved": "已批准，已排入播出计划。",
    "rejected": "已驳回。",
    "cancelled": "已取消，正在播出的喇叭已收到停止指令。",
}


def _zone(settings) -> ZoneInfo:
    return ZoneInfo(settings.scheduler.timezone)


# ---------------------------------------------------------------- shared helpers


def area_tree(session: Session, user: User) -> list[dict]:
    """The areas a user may target, as county -> townships -> villages (scoped to their area)."""
    if user.area_code:
        root = session.get(Region, user.area_code)
        prefix = regions.code_prefix(user.area_code)
        rows = session.scalars(
            select(Region).where(Region.code.startswith(prefix)).order_by(Region.code)
        ).all()
        top = [root] if root else []
    else:
        rows = session.scalars(select(Region).order_by(Region.code)).all()
        top = [r for r in rows if r.parent_code is None]
    children: dict[str, list[Region]] = {}
    for r in rows:
        if r.parent_code:
            children.setdefault(r.parent_code, []).append(r)

    def node(r: Region) -> dict:
        return {"code": r.code, "name": r.name, "level": r.level.value,
                "children": [node(c) for c in children.get(r.code, [])]}  # fmt: skip

    roots = [node(r) for r in top]
    for root in roots:
        root["open"] = True
    return roots


def area_names(session: Session, codes) -> dict[str, str]:
    codes = list(set(codes))
    if not codes:
        return {}
    return dict(session.execute(select(Region.code, Region.name).where(Region.code.in_(codes))).all())


def usernames(session: Session, ids) -> dict[int, str]:
    ids = [i for i in set(ids) if i is not None]
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.username).where(User.id.in_(ids))).all())


def audio_urls(session: Session, broadcasts) -> dict[int, str]:
    ids = {b.asset_id for b in broadcasts if b.asset_id}
    if not ids:
        return {}
    rows = session.execute(select(AudioAsset.id, AudioAsset.sha256).where(AudioAsset.id.in_(ids))).all()
    return {i: store.media_path(sha) for i, sha in rows}


def load_broadcast(session: Session, user: User, broadcast_id: int) -> Broadcast:
    """The broadcast if the user may see it: 404 / 403 pages otherwise."""
    try:
        return visible_broadcast(session=session, user=user, broadcast_id=broadcast_id)
    except NotFound:
        raise PageError(404, f"没有编号为 {broadcast_id} 的广播。") from None
    except Forbidden:
        raise PageError(403, f"广播 {broadcast_id} 不在您的管辖范围内。") from None


def describe_schedule(broadcast: Broadcast, zone: ZoneInfo) -> str:
    rule = broadcast.recurrence
    if rule:
        times = "、".join(rule.get("times", []))
        if rule.get("freq") == "weekly":
            names = dict(zip(WEEKDAY_KEYS, render.WEEKDAYS, strict=True))
            days = "、".join(names.get(d, d) for d in rule.get("weekdays", []))
            text = f"每周{days} {times}"
        else:
            text = f"每天 {times}"
        end = rule.get("end_date")
        return f"{text}（{rule.get('start_date')} 起{'，至 ' + end if end else ''}）"
    if broadcast.start_at:
        return render.local(broadcast.start_at, zone)
    return MODES["now"]


# ---------------------------------------------------------------- home


@router.get("")
def home(user: WebUser):
    if user.role == Role.operator:
        return RedirectResponse("/console/fleet", status_code=303)
    if user.role == Role.viewer:
        return RedirectResponse("/console/reports", status_code=303)
    if user.role == Role.approver:
        return RedirectResponse("/console/queue", status_code=303)
    return RedirectResponse("/console/items", status_code=303)


# ---------------------------------------------------------------- compose


def _voice_options(settings) -> list[dict]:
    found = voices.all_voices(settings)
    default = settings.tts.edge_voice if settings.tts.engine == "edge" else settings.tts.espeak_voice
    return [
        {"id": v.id, "label": f"{v.name}（{v.dialect}，{'女' if v.gender == 'female' else '男'}声）",
         "engine": v.engine, "available": v.available, "default": v.id == default}
        for v in found
    ]  # fmt: skip


def _compose_page(request, session, settings, user, form: ComposeForm, status_code: int = 200):
    return render.page(
        request,
        "compose.html",
        user,
        status_code=status_code,
        form=form,
        tree=area_tree(session, user),
        names=area_names(session, form.areas),
        voices=_voice_options(settings),
        rates=RATES,
        repeats=REPEATS,
        modes=MODES,
        emergency=EMERGENCY,
        weekday_keys=list(zip(WEEKDAY_KEYS, render.WEEKDAYS, strict=True)),
        max_chars=settings.tts.max_chars,
        today=datetime.now(_zone(settings)).date().isoformat(),
    )


@router.get("/compose")
def compose_page(request: Request, session: SessionDep, settings: SettingsDep, user: WebUser):
    require_role(user, *AUTHORS)
    return _compose_page(request, session, settings, user, ComposeForm())


@router.post("/compose", dependencies=[Csrf])
def compose(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    planner: PlannerDep,
    user: WebUser,
    title: Annotated[str, Form()] = "",
    text: Annotated[str, Form()] = "",
    voice: Annotated[str, Form()] = "",
    rate: Annotated[str, Form()] = "0",
    repeat: Annotated[str, Form()] = "1",
    chime: Annotated[bool, Form()] = False,
    closing_chime: Annotated[bool, Form()] = False,
    previewed_asset_id: Annotated[str, Form()] = "",
    areas: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI copies defaults)
    mode: Annotated[str, Form()] = "now",
    start_local: Annotated[str, Form()] = "",
    times: Annotated[str, Form()] = "",
    start_date: Annotated[str, Form()] = "",
    end_date: Annotated[str, Form()] = "",
    weekdays: Annotated[list[str], Form()] = [],  # noqa: B006
    priority: Annotated[str, Form()] = "",
    volume: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
):
    require_role(user, *AUTHORS)
    form = ComposeForm(
        title=title, text=text, voice=voice, rate=rate, repeat=repeat, chime=chime,
        closing_chime=closing_chime, previewed_asset_id=previewed_asset_id, areas=areas, mode=mode,
        start_local=start_local, times=times, start_date=start_date, end_date=end_date, weekdays=weekdays,
        priority=priority, volume=volume, comment=comment,
    )  # fmt: skip
    checked = form.check(max_chars=settings.tts.max_chars, zone=_zone(settings))
    if checked is None:
        return _compose_page(request, session, settings, user, form, status_code=422)
    broadcast_in, previewed_asset_id = checked
    try:
        broadcast = flows.create_broadcast(
            session=session, settings=settings, planner=planner, user=user, broadcast_in=broadcast_in,
            previewed_asset_id=previewed_asset_id,
        )  # fmt: skip
    except CunxiangError as exc:
        where, message = form_error(exc)
        form.errors[where] = message
        return _compose_page(request, session, settings, user, form, status_code=status_of(exc))
    return RedirectResponse(f"/console/items/{broadcast.id}?done=created", status_code=303)


@router.post("/preview", dependencies=[Csrf])
def preview(
    session: SessionDep, settings: SettingsDep, user: WebUser, body: Annotated[dict, Body()]
) -> JSONResponse:
    """Speak the notice as typed; the page plays the returned URL in an <audio> element and sends
    the returned `asset_id` back with the form, so submitting airs what was heard."""
    require_role(user, *AUTHORS)
    form = ComposeForm(
        text=str(body.get("text") or ""), voice=str(body.get("voice") or ""),
        rate=str(body.get("rate") or "0"), repeat=str(body.get("repeat") or "1"),
        chime=bool(body.get("chime")), closing_chime=bool(body.get("closing_chime")),
    )  # fmt: skip
    problem = form.text_error(max_chars=settings.tts.max_chars)
    speech = form.speech() if problem is None else None
    if problem is not None or speech is None:
        return JSONResponse({"detail": problem or next(iter(form.errors.values()))}, status_code=422)
    try:
        result = tts_flows.preview(
            session=session, settings=settings, user=user, text=form.text.strip(), speech=speech
        )
    except InvalidInput as exc:
        return JSONResponse({"detail": f"无法朗读：{exc.message}"}, status_code=status_of(exc))
    except CunxiangError as exc:
        return JSONResponse({"detail": message_of(exc, PREVIEW_FAILED)}, status_code=status_of(exc))
    asset = result.asset
    return JSONResponse(
        {
            "asset_id": asset.id,
            "url": store.media_path(asset.sha256),
            "duration_ms": asset.duration_ms,
            "engine": asset.engine,
            "voice": asset.voice,
            "fallback": result.fallback_reason,
        }
    )


PREVIEW_FAILED = {Unavailable: "语音合成失败，请稍后再试（{message}）。"}


# ---------------------------------------------------------------- my items


@router.get("/items")
def items(
    request: Request,
    session: SessionDep,
    user: WebUser,
    scope: Annotated[str, Query(pattern="^(mine|all)$")] = "mine",
    status: Annotated[BroadcastStatus | None, Query()] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    done: str | None = None,
):
    if scope == "mine":
        query = select(Broadcast).where(Broadcast.created_by == user.id)
        if status is not None:
            query = query.where(Broadcast.status == status)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        found = list(
            session.scalars(
                query.order_by(Broadcast.id.desc()).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
            ).all()
        )
    else:
        found, total = view.list_broadcasts(
            session=session, user=user, status=status, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
        )
    zone = _zone(request.app.state.services.settings)
    return render.page(
        request,
        "items.html",
        user,
        items=found,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        scope=scope,
        status=status.value if status else "",
        names=area_names(session, [c for b in found for c in b.target_areas or []]),
        schedules={b.id: describe_schedule(b, zone) for b in found},
        done=DONE_MESSAGES.get(done or ""),
    )


@router.get("/items/{broadcast_id}")
def item(
    request: Request, session: SessionDep, settings: SettingsDep, user: WebUser, broadcast_id: Id,
    done: str | None = None, error: str | None = None,
):  # fmt: skip
    broadcast = load_broadcast(session, user, broadcast_id)
    history = audit.history(session=session, object_type=AUDIT_TYPE, object_id=broadcast.id)
    figures = reach.of_broadcast(session=session, broadcast=broadcast)
    return render.page(
        request,
        "item.html",
        user,
        b=broadcast,
        audio=audio_urls(session, [broadcast]).get(broadcast.asset_id),
        names=area_names(session, broadcast.target_areas or []),
        people=usernames(
            session, [broadcast.created_by, broadcast.reviewed_by, *(h.user_id for h in history)]
        ),
        history=history,
        occurrences=broadcast.occurrences[:20],
        schedule=describe_schedule(broadcast, _zone(settings)),
        reach=figures,
        may_cancel=may_cancel(user=user, broadcast=broadcast),
        done=DONE_MESSAGES.get(done or ""),
        error=error,
    )


@router.post("/items/{broadcast_id}/cancel", dependencies=[Csrf])
def cancel(
    session: SessionDep,
    planner: PlannerDep,
    sender: SenderDep,
    user: WebUser,
    broadcast_id: Id,
    comment: Annotated[str, Form()] = "",
):
    try:
        flows.cancel_broadcast(
            session=session, planner=planner, sender=sender, user=user, broadcast_id=broadcast_id,
            comment=comment.strip() or None,
        )  # fmt: skip
    except CunxiangError as exc:
        raise page_error(exc, {Conflict: "这条广播已经结束，无法取消。"}) from None
    return RedirectResponse(f"/console/items/{broadcast_id}?done=cancelled", status_code=303)


# ---------------------------------------------------------------- approval queue


def _queue_page(request, session, settings, user, *, error: dict | None = None, done=None, status_code=200):
    found, total = view.list_broadcasts(
        session=session, user=user, status=BroadcastStatus.submitted, limit=100
    )
    zone = _zone(settings)
    return render.page(
        request,
        "queue.html",
        user,
        status_code=status_code,
        items=found,
        total=total,
        audio=audio_urls(session, found),
        names=area_names(session, [c for b in found for c in b.target_areas or []]),
        people=usernames(session, [b.created_by for b in found]),
        schedules={b.id: describe_schedule(b, zone) for b in found},
        refusals={b.id: approval_refusal(user=user, broadcast=b) for b in found},
        error=error or {},
        done=DONE_MESSAGES.get(done or ""),
    )


@router.get("/queue")
def queue(
    request: Request, session: SessionDep, settings: SettingsDep, user: WebUser, done: str | None = None
):
    require_role(user, Role.approver)
    return _queue_page(request, session, settings, user, done=done)


QUEUE_CONFLICT = {Conflict: "这条广播已不在待审核状态。"}


@router.post("/queue/{broadcast_id}/approve", dependencies=[Csrf])
def approve(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    planner: PlannerDep,
    user: WebUser,
    broadcast_id: Id,
    comment: Annotated[str, Form()] = "",
):
    try:
        flows.approve_broadcast(
            session=session, settings=settings, planner=planner, user=user, broadcast_id=broadcast_id,
            comment=comment.strip() or None,
        )  # fmt: skip
    except CunxiangError as exc:
        return _queue_refusal(request, session, settings, user, broadcast_id, exc)
    return RedirectResponse("/console/queue?done=approved", status_code=303)


@router.post("/queue/{broadcast_id}/reject", dependencies=[Csrf])
def reject(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: WebUser,
    broadcast_id: Id,
    comment: Annotated[str, Form()] = "",
):
    try:
        flows.reject_broadcast(session=session, user=user, broadcast_id=broadcast_id, comment=comment.strip())
    except CunxiangError as exc:
        return _queue_refusal(request, session, settings, user, broadcast_id, exc)
    return RedirectResponse("/console/queue?done=rejected", status_code=303)


def _queue_refusal(request, session, settings, user, broadcast_id: int, exc: CunxiangError):
    """The queue again, the refusal shown at its item (a page of its own when the item is not the
    user's to see)."""
    if isinstance(exc, NotFound) or (isinstance(exc, Forbidden) and exc.reason in ("role", "area", None)):
        raise page_error(exc) from None
    if isinstance(exc, InvalidInput) and exc.field == "comment":
        message = "驳回时请写明原因。"
    else:
        message = message_of(exc, QUEUE_CONFLICT)
    return _queue_page(
        request, session, settings, user, error={broadcast_id: message}, status_code=status_of(exc)
    )


# ---------------------------------------------------------------- the coming week


def area_choices(session: Session, user: User, area: str) -> list[Region]:
    """The user's own area, its townships, and (for a township) its villages: the area pickers."""
    root = home_area(session, user)
    choices = [session.get(Region, root)]
    level = regions.level_of(root)
    if level is RegionLevel.county:
        choices += regions.list_children(session=session, parent_code=root, limit=1000)[0]
        if regions.level_of(area) is not RegionLevel.county:
            township = regions.township_of(area)
            choices += regions.list_children(session=session, parent_code=township, limit=1000)[0]
    elif level is RegionLevel.township:
        choices += regions.list_children(session=session, parent_code=root, limit=1000)[0]
    seen: dict[str, Region] = {}
    for r in choices:
        if r is not None:
            seen.setdefault(r.code, r)
    return sorted(seen.values(), key=lambda r: r.code)


@router.get("/schedule")
def schedule(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: WebUser,
    area: Annotated[str | None, Query()] = None,
):
    area = area or home_area(session, user)
    region = check_area(session, user, area)
    zone = _zone(settings)
    today = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today.astimezone(utcnow().tzinfo), (today + timedelta(days=7)).astimezone(utcnow().tzinfo)
    found = view.airings(session=session, area_codes=[area], start=start, end=end)
    days = []
    for n in range(7):
        day = (today + timedelta(days=n)).date()
        days.append(
            {"day": day, "weekday": render.WEEKDAYS[day.weekday()],
             "airings": [a for a in found if a.start.astimezone(zone).date() == day]}
        )  # fmt: skip
    return render.page(
        request,
        "schedule.html",
        user,
        region=region,
        area=area,
        choices=area_choices(session, user, area),
        days=days,
        names=area_names(session, [c for a in found for c in a.areas]),
        now=utcnow(),
    )
