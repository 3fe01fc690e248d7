"""Request and response shapes of the broadcast, schedule and approval API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from scheduler.models import BroadcastStatus, OccurrenceStatus, Priority
from scheduler.recurrence import DEFAULT_TIMEZONE
from tts.schemas import SpeechSettings, fold_speech

# Speech settings the first broadcast API took beside `text`; read into `speech`.
LEGACY_SPEECH_FIELDS = ("voice", "rate")


class RecurrenceIn(BaseModel):
    """When a broadcast repeats: local wall-clock times in an IANA zone (see docs/scheduling.md)."""

    model_config = ConfigDict(extra="forbid")

    freq: Literal["once", "daily", "weekly", "monthly"] = Field(
        default="daily", description="once (start_date only), daily, weekly (on weekdays), monthly."
    )
    times: list[str] = Field(min_length=1, max_length=48, description='Local times of day, "07:00".')
    start_date: date = Field(description="First day (local).")
    end_date: date | None = Field(default=None, description="Last day (local), inclusive; absent: open.")
    interval: int = Field(default=1, ge=1, le=366, description="Every N days/weeks/months.")
    weekdays: list[str] = Field(default_factory=list, description="mon..sun (daily/weekly).")
    month_days: list[int] = Field(default_factory=list, description="1..31, or -1 = last day (monthly).")
    except_dates: list[date] = Field(default_factory=list, description="Days it does not air.")
    timezone: str = Field(default=DEFAULT_TIMEZONE, description="IANA zone of the times.")


class BroadcastCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200, description="Short title for staff and villagers.")
    text: str | None = Field(
        default=None, min_length=1, description="A notice, read out by the speech engine (see `speech`)."
    )
    speech: SpeechSettings | None = Field(
        default=None,
        description="With `text`: how it is spoken and framed, the object POST /tts/preview takes; the same "
        "text and settings air the previewed asset. Absent: the defaults.",
    )
    playlist_id: int | None = Field(default=None, ge=1, description="Or a playlist, assembled into one file.")
    asset_id: int | None = Field(
        default=None, ge=1, description="Or an audio asset (a preview, an upload), aired exactly as it is."
    )
    areas: list[str] = Field(default_factory=list, description="12-digit area codes; everything under them.")
    devices: list[str] = Field(default_factory=list, description="Extra speaker ids.")
    start_at: AwareDatetime | None = Field(
        default=None,
        description=(
            "One airing, ISO 8601 with offset; absent (and no recurrence): as soon as it can go out, "
            "now plus the lead time (CUNXIANG_SCHEDULER_LEAD_TIME_S) the speakers get to wake."
        ),
    )
    recurrence: RecurrenceIn | None = Field(default=None, description="Or a repeating schedule.")
    priority: Priority | None = Field(
        default=None,
        description="Absent means the level of the widest target area (county/township/village).",
    )
    volume: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Speaker volume 0-100 the speakers are set to for this broadcast (absent: as they are); "
        "the loudness of the speech itself is `speech.volume`.",
    )
    late_start_s: float | None = Field(
        default=None, ge=0, le=3600, description="Latest start after the planned time; later is missed."
    )
    submit: bool = Field(
        default=True,
        description="Submit for approval at once (approved at once when you may approve it yourself and "
        "it is not an emergency); false keeps a draft.",
    )
    comment: str | None = Field(default=None, max_length=2000, description="Note for the approver.")

    @model_validator(mode="before")
    @classmethod
    def _older_speech_fields(cls, data: object) -> object:
        # Older clients gave `voice` and an integer `rate` (percent) beside `text`.
        return fold_speech(data, LEGACY_SPEECH_FIELDS, integer_percent=True)

    @field_validator("volume", mode="before")
    @classmethod
    def _speaker_volume(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().endswith("%"):
            raise ValueError(
                f"`volume` is the speakers' volume, 0 to 100; the loudness of the speech ({value!r}) "
                "goes in `speech.volume`"
            )
        return value

    @field_validator("areas")
    @classmethod
    def _area_codes(cls, value: list[str]) -> list[str]:
        bad = [c for c in value if not (len(c) == 12 and c.isascii() and c.isdigit())]
        if bad:
            raise ValueError(f"area codes are 12 digits; not: {', '.join(map(repr, bad))}")
        return value

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("text is empty")
        return value


class Review(BaseModel):
    """Body of submit, approve, reject and cancel."""

    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=2000)


class OccurrenceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    start_at: datetime
    expires_at: datetime
    deadline_at: datetime
    status: OccurrenceStatus
    dispatched_at: datetime | None
    asset_id: int | None = None
    detail: str | None


class AuditRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    user_id: int | None
    action: str
    comment: str | None
    detail: dict | None


class ConflictRead(BaseModel):
    broadcast_id: int
    start: datetime
    other_broadcast_id: int
    other_title: str
    other_priority: Priority
    other_start: datetime
    other_end: datetime
    winner: int | None
    outcome: str


class BroadcastRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    text: str | None
    playlist_id: int | None
    priority: Priority
    status: BroadcastStatus
    target_areas: list[str]
    target_devices: list[str]
    scope_code: str | None
    volume: int | None
    asset_id: int | None
    start_at: datetime | None
    recurrence: dict | None
    late_start_s: float | None
    created_by: int | None
    created_at: datetime
    submitted_at: datetime | None
    reviewed_by: int | None
    reviewed_at: datetime | None
    review_comment: str | None
    occurrences: list[OccurrenceRead] = Field(
        default_factory=list, description="Up to the first 20 planned; all at /occurrences."
    )
    next_airings: list[datetime] = Field(
        default_factory=list, description="From the rule, beyond the horizon."
    )
    conflicts: list[ConflictRead] = Field(
        default_factory=list, description="Filled when scheduling: overlaps on shared speakers."
    )


class AiringRead(BaseModel):
    broadcast_id: int
    occurrence_id: int | None = Field(description="None: projected from the rule, not planned yet.")
    title: str
    priority: Priority
    start: datetime
    end: datetime
    areas: list[str]
    status: str


class ScheduleRead(BaseModel):
    area: str
    start: datetime
    end: datetime
    items: list[AiringRead]
    conflicts: list[ConflictRead]


class QuietHoursIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str | None = Field(default=None, pattern=r"^\d{2}:\d{2}$", description="HH:MM; null: inherit.")
    end: str | None = Field(
        default=None, pattern=r"^\d{2}:\d{2}$", description="HH:MM; equal to start: none."
    )


class QuietHoursRead(BaseModel):
    area: str
    start: str
    end: str
    own: bool = Field(description="False: inherited from `from_area` or the default.")
    from_area: str
