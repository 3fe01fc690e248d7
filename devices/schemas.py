"""Request and response shapes of the device API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from devices.models import AlarmKind, DeliveryState


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Speaker id, also its MQTT client id.")
    name: str = Field(min_length=1, max_length=100)
    area_code: str = Field(pattern=r"^\d{12}$", description="Village (or township/county) it belongs to.")
    model: str = Field(default="", max_length=64)


class DeviceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    area_code: str
    model: str
    online: bool
    online_changed_at: datetime | None = Field(description="Since when online/offline.")
    last_seen_at: datetime | None
    state: str | None = Field(default=None, description="idle, downloading or playing (last status).")
    volume: int | None = None
    fault: str | None = None
    firmware: str | None = None
    clock_offset_s: float | None = Field(default=None, description="Server time minus speaker time.")
    pending: int | None = Field(default=None, description="Airings the speaker holds, not yet final.")
    rejected_total: int = Field(default=0, description="Commands the speaker refused since it started.")
    last_rejection: str | None = None
    status_at: datetime | None = Field(default=None, description="When its last status arrived.")


class DeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    occurrence_id: int
    device_id: str
    area_code: str
    state: DeliveryState
    received_at: datetime | None
    playing_at: datetime | None
    finished_at: datetime | None
    seconds_played: float | None = Field(description="At most the audio's duration (clamped).")
    error: str | None
    seconds_reported: float | None = Field(
        default=None,
        description="Set only when the speaker reported more seconds than the audio lasts (a frozen "
        "player): its figure, before seconds_played was clamped to the duration.",
    )


class AreaHealthRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    name: str
    level: str
    devices: int
    online: int
    offline: int
    never_connected: int = Field(description="Offline speakers that have never connected.")
    playing: int
    faulted: int = Field(description="Speakers whose last status carries a fault.")
    silent: int = Field(description="Online speakers with no status for 3 heartbeats.")
    alarmed: int = Field(description="Speakers with at least one active alarm.")
    online_rate: float | None = Field(description="online / devices (null when there are none).")


class FleetHealth(BaseModel):
    area: AreaHealthRead
    children: list[AreaHealthRead]


class AlarmRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    device_id: str
    area_code: str
    kind: AlarmKind
    raised_at: datetime
    cleared_at: datetime | None
    detail: str
    active: bool = False


class DeviceCommandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["set_volume", "test_tone", "stop", "sync"]
    volume: int | None = Field(default=None, ge=0, le=100, description="set_volume: 0-100.")
    duration_s: float | None = Field(default=None, gt=0, le=60, description="test_tone: seconds.")
    occurrence_id: int | None = Field(
        default=None, ge=1, description="stop: this occurrence; absent = whatever plays."
    )


class AreaCommandCreate(DeviceCommandCreate):
    area: str = Field(pattern=r"^\d{12}$", description="Area code: every speaker under it.")


class CommandResultRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    device_id: str
    ok: bool
    error: str | None
    at: datetime


class DeviceCommandRead(BaseModel):
    id: int
    cmd_id: str
    type: str
    scope: str
    target: str
    params: dict
    created_at: datetime
    expires_at: datetime
    sent: bool
    error: str | None
    targeted: int = Field(description="Speakers registered under the target when it was sent.")
    answered: int
    succeeded: int
    failed: int
    no_answer: int | None = Field(description="Speakers that never answered; null until the command expires.")
    results: list[CommandResultRead]


class StatusRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    received_at: datetime
    reported_at: datetime | None
    online: bool
    state: str | None
    volume: int | None
    fault: str | None
    firmware: str | None
    uptime_s: float | None
    clock_offset_s: float | None
    rejected_total: int


class Credentials(BaseModel):
    device_id: str
    username: str
    password: str = Field(description="Shown once; only its hash is kept.")
