"""The compose form: what staff type, checked field by field with Chinese messages, then turned
into the `BroadcastCreate` that `scheduler.flows.create_broadcast` takes (the API's own schema).

The preview button and the submit button read the speech settings through the same
`ComposeForm.speech`, and the page sends back the id of the asset it played: what was heard is
what is submitted (see `create_broadcast`'s `previewed_asset_id`). A refusal of the use case is
shown at the control it names, chosen by its type (`form_error`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from core.clock import utcnow
from core.errors import CunxiangError, Forbidden, InvalidInput, Unavailable
from scheduler.exceptions import QuietHoursRefusal
from scheduler.models import Priority
from scheduler.schemas import BroadcastCreate
from tts.audio import MAX_REPEAT
from tts.engines import RATE_MAX, RATE_MIN
from tts.schemas import SpeechSettings

TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
WEEKDAY_KEYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
MODES = {"now": "审核通过后立即播出", "once": "指定时间播出一次", "daily": "每天", "weekly": "每周"}
RATES = [
    (-30, "很慢（-30%）"),
    (-20, "较慢（-20%）"),
    (-10, "稍慢（-10%）"),
    (0, "正常"),
    (10, "稍快（+10%）"),
]
REPEATS = [(1, "读一遍"), (2, "读两遍"), (3, "读三遍")]
EMERGENCY = [p for p in Priority if p.is_emergency]
TITLE_MAX = 200
COMMENT_MAX = 2000

# Where a scheduler error about a field is shown, and what it is called.
FIELD_LABELS = {
    "title": "标题",
    "text": "正文",
    "voice": "播音员",
    "rate": "语速",
    "repeat": "朗读遍数",
    "speech": "朗读设置",
    "areas": "播出区域",
    "start_at": "播出时间",
    "recurrence": "重复规则",
    "priority": "优先级",
    "volume": "喇叭音量",
    "comment": "备注",
}


@dataclass
class ComposeForm:
    """What was typed (kept as text, so the page can show it again) and what is wrong with it."""

    title: str = ""
    text: str = ""
    voice: str = ""
    rate: str = "0"
    repeat: str = "1"
    chime: bool = False
    closing_chime: bool = False
    # The asset the preview button played (set by the page); aired when it matches text and settings.
    previewed_asset_id: str = ""
    areas: list[str] = field(default_factory=list)
    mode: str = "now"
    start_local: str = ""
    times: str = ""
    start_date: str = ""
    end_date: str = ""
    weekdays: list[str] = field(default_factory=list)
    priority: str = ""
    volume: str = ""
    comment: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    def check(
        self, *, max_chars: int, zone: ZoneInfo, now: datetime | None = None
    ) -> tuple[BroadcastCreate, int | None] | None:
        """Validate; return the broadcast to create and the previewed asset's id, or None with
        `errors` filled."""
        now = now or utcnow()
        e = self.errors
        title, text = self.title.strip(), self.text.strip()
        if not title:
            e["title"] = "请填写标题。"
        elif len(title) > TITLE_MAX:
            e["title"] = f"标题最多 {TITLE_MAX} 个字。"
        text_error = self.text_error(max_chars=max_chars)
        if text_error:
            e["text"] = text_error
        speech = self.speech()
        if not self.areas:
            e["areas"] = "请至少选择一个播出区域。"
        elif any(not (len(c) == 12 and c.isdigit()) for c in self.areas):
            e["areas"] = "区域代码应为12位数字。"
        priority = None
        if self.priority:
            try:
                priority = Priority(self.priority)
            except ValueError:
                e["priority"] = "请选择列表中的优先级。"
        volume = None
        if self.volume.strip():
            if not self.volume.strip().isdigit() or not 0 <= int(self.volume) <= 100:
                e["volume"] = "喇叭音量应为 0 到 100 的整数。"
            else:
                volume = int(self.volume)
        if len(self.comment) > COMMENT_MAX:
            e["comment"] = f"备注最多 {COMMENT_MAX} 个字。"
        start_at, recurrence = self._schedule(zone, now)
        if e:
            return None
        try:
            broadcast_in = BroadcastCreate(
                title=title, text=text, speech=speech, areas=list(dict.fromkeys(self.areas)),
                start_at=start_at, recurrence=recurrence, priority=priority, volume=volume,
                comment=self.comment.strip() or None,
            )  # fmt: skip
        except ValidationError as exc:  # what the checks above let through, in the API's words
            first = exc.errors()[0]
            top = str(first["loc"][0]) if first["loc"] else "_"
            e[top if top in FIELD_LABELS else "_"] = f"{FIELD_LABELS.get(top, '内容')}有误：{first['msg']}"
            return None
        previewed = int(self.previewed_asset_id) if self.previewed_asset_id.isdigit() else None
        return broadcast_in, previewed

    def text_error(self, *, max_chars: int) -> str | None:
        """Why the notice text cannot be read out, in Chinese; None when it can."""
        text = self.text.strip()
        if not text:
            return "请填写广播正文。"
        if len(text) > max_chars:
            return f"正文最多 {max_chars} 个字，现在是 {len(text)} 个字。"
        return None

    def speech(self) -> SpeechSettings | None:
        """The speech settings typed (the same for preview and submit); None with `errors` filled."""
        try:
            rate = int(self.rate or 0)
            if not RATE_MIN <= rate <= RATE_MAX:
                raise ValueError
        except ValueError:
            self.errors["rate"] = f"语速应在 {RATE_MIN}% 到 +{RATE_MAX}% 之间。"
            return None
        try:
            repeat = int(self.repeat or 1)
            if not 1 <= repeat <= MAX_REPEAT:
                raise ValueError
        except ValueError:
            self.errors["repeat"] = f"朗读遍数应为 1 到 {MAX_REPEAT}。"
            return None
        return SpeechSettings.of(
            voice=self.voice or None, rate=rate, repeat=repeat, chime=self.chime,
            closing_chime=self.closing_chime,
        )  # fmt: skip

    def _schedule(self, zone: ZoneInfo, now: datetime) -> tuple[datetime | None, dict | None]:
        e = self.errors
        if self.mode not in MODES:
            e["mode"] = "请选择播出方式。"
            return None, None
        if self.mode == "now":
            return None, None
        if self.mode == "once":
            try:
                local = datetime.strptime(self.start_local, "%Y-%m-%dT%H:%M")
            except ValueError:
                e["start_local"] = "请填写播出日期和时间。"
                return None, None
            start_at = local.replace(tzinfo=zone)
            if start_at < now - timedelta(minutes=1):
                e["start_local"] = "播出时间已经过去，请选择将来的时间。"
            elif start_at > now + timedelta(days=366):
                e["start_local"] = "播出时间不能超过一年以后。"
            return start_at, None
        times = [t.strip() for t in re.split(r"[,，、\s]+", self.times) if t.strip()]
        if not times:
            e["times"] = "请填写每天的播出时间，如 07:00, 18:30。"
        elif bad := [t for t in times if not TIME_RE.match(t)]:
            e["times"] = f"时间格式应为 时:分（如 07:00），这些不对：{'、'.join(bad)}。"
        first = last = None
        try:
            first = date.fromisoformat(self.start_date) if self.start_date else now.astimezone(zone).date()
        except ValueError:
            e["start_date"] = "开始日期格式不对。"
        try:
            last = date.fromisoformat(self.end_date) if self.end_date else None
        except ValueError:
            e["end_date"] = "结束日期格式不对。"
        if first and last and last < first:
            e["end_date"] = "结束日期不能早于开始日期。"
        spec: dict = {"freq": self.mode, "times": times, "start_date": first.isoformat() if first else None,
                      "end_date": last.isoformat() if last else None, "timezone": zone.key}  # fmt: skip
        if self.mode == "weekly":
            days = [d for d in self.weekdays if d in WEEKDAY_KEYS]
            if not days:
                e["weekdays"] = "请选择每周哪几天播出。"
            spec["weekdays"] = days
        return None, spec


def form_error(exc: CunxiangError) -> tuple[str, str]:
    """A refusal of the create use case as (form control, Chinese message), by its type and field."""
    if isinstance(exc, Forbidden):
        if exc.reason == "area":
            return "areas", "所选区域不在您的管辖范围内。"
        return "_", "您无权执行此操作。"
    if isinstance(exc, Unavailable):
        return "_", f"语音合成失败，请稍后再试（{exc.message}）。"
    if not isinstance(exc, InvalidInput):
        return "_", exc.message
    parts = exc.field.split(".")
    top = parts[0]
    if top == "speech":  # speech.voice, speech.rate, ...: shown at that control
        where = parts[1] if len(parts) > 1 and parts[1] in ("voice", "rate", "repeat") else "voice"
        return where, f"朗读设置有误：{exc.message}"
    if top == "text":
        return "text", f"正文无法朗读：{exc.message}"
    target = {"start_at": "start_local", "recurrence": "times"}.get(top, top)
    if target not in FIELD_LABELS and target not in ("start_local", "times"):
        target = "_"
    if isinstance(exc, QuietHoursRefusal):
        return target, f"有 {exc.count} 次播出落在静默时段（该时段只允许应急广播）：{exc.listed}"
    if exc.reason == "past":
        return target, "播出时间已经过去，请选择将来的时间。"
    if exc.reason == "unknown_area":
        return "areas", "所选区域不存在，请重新选择。"
    return target, f"{FIELD_LABELS.get(top, '内容')}有误：{exc.message}"
