"""Templates, Chinese labels and display filters shared by the console and the public pages."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.templating import Jinja2Templates

from api.web import session as web_session
from core.models import User

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC = Path(__file__).resolve().parent.parent / "static"

STATUS_LABELS = {
    "draft": "草稿",
    "submitted": "待审核",
    "approved": "已批准",
    "rejected": "已驳回",
    "scheduled": "已排期",
    "done": "已播完",
    "cancelled": "已取消",
}
OCCURRENCE_LABELS = {
    "scheduled": "待播出",
    "dispatched": "已下发",
    "done": "已完成",
    "missed": "错过",
    "failed": "下发失败",
    "cancelled": "已取消",
    "refused": "静默时段拒播",
}
PRIORITY_LABELS = {
    "village": "村级",
    "township": "乡镇级",
    "county": "县级",
    "emergency_blue": "应急·蓝色",
    "emergency_yellow": "应急·黄色",
    "emergency_orange": "应急·橙色",
    "emergency_red": "应急·红色",
}
DELIVERY_LABELS = {
    "pending": "待回报",
    "received": "已接收",
    "playing": "播放中",
    "played": "完整播放",
    "failed": "播放失败",
    "skipped": "跳过",
    "preempted": "被插播",
    "no_report": "无回报",
}
AUDIT_LABELS = {
    "created": "创建",
    "submitted": "提交审核",
    "approved": "批准",
    "rejected": "驳回",
    "cancelled": "取消",
}
WEEKDAYS = ["周一", "周二", "周三", "周四", "周五", "周六", "周日"]

templates = Jinja2Templates(directory=str(TEMPLATES))


def _zone(request: Request) -> ZoneInfo:
    return ZoneInfo(request.app.state.services.settings.scheduler.timezone)


def local(value: datetime | None, zone: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A UTC instant as local wall-clock text."""
    return value.astimezone(zone).strftime(fmt) if value else ""


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def page(request: Request, name: str, user: User | None = None, status_code: int = 200, **context):
    """Render a template with the common context (user, CSRF token, labels, time formatting)."""
    zone = _zone(request)
    web = web_session.read(request)
    response = templates.TemplateResponse(
        request,
        name,
        {
            "user": user,
            "role_label": web_session.ROLE_LABELS.get(user.role) if user else None,
            "csrf": web.csrf,
            "zone": zone.key,
            "local": lambda v, fmt="%Y-%m-%d %H:%M": local(v, zone, fmt),
            "percent": percent,
            "status_labels": STATUS_LABELS,
            "occurrence_labels": OCCURRENCE_LABELS,
            "priority_labels": PRIORITY_LABELS,
            "delivery_labels": DELIVERY_LABELS,
            "audit_labels": AUDIT_LABELS,
            "weekdays": WEEKDAYS,
            **context,
        },
        status_code=status_code,
    )
    if web.dirty:
        web_session.write(request, response, web)
    return response
