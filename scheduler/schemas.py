"""Request and response shapes of the broadcast API."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from scheduler.models import BroadcastStatus, OccurrenceStatus, Priority


class BroadcastCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200, description="Short title for staff and villagers.")
    text: str = Field(min_length=1, description="The notice, read out by the speech engine.")
    areas: list[str] = Field(default_factory=list, description="12-digit area codes; everything under them.")
    devices: list[str] = Field(default_factory=list, description="Extra speaker ids.")
    start_at: AwareDatetime | None = Field(
        default=None, description="ISO 8601 with offset; absent means now plus the lead time."
    )
    priority: Priority | None = Field(
        default=None,
        description="Absent means the level of the widest target area (county/township/village).",
    )
    volume: int | None = Field(default=None, ge=0, le=100, description="Speaker volume for this broadcast.")
    voice: str | None = Field(default=None, max_length=64, description="Voice id; absent means the default.")

    @field_validator("areas")
    @classmethod
    def _area_codes(cls, value: list[str]) -> list[str]:
        bad = [c for c in value if not (len(c) == 12 and c.isascii() and c.isdigit())]
        if bad:
            raise ValueError(f"area codes are 12 digits; not: {', '.join(map(repr, bad))}")
        return value

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty")
        return value


class OccurrenceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    start_at: datetime
    expires_at: datetime
    deadline_at: datetime
    status: OccurrenceStatus
    dispatched_at: datetime | None
    detail: str | None


class BroadcastRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    text: str
    priority: Priority
    status: BroadcastStatus
    target_areas: list[str]
    target_devices: list[str]
    volume: int | None
    asset_id: int
    created_by: int | None
    created_at: datetime
    occurrences: list[OccurrenceRead]
