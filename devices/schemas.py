"""Request and response shapes of the device API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from devices.models import DeliveryState


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
    online_changed_at: datetime | None
    last_seen_at: datetime | None


class DeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    occurrence_id: int
    device_id: str
    area_code: str
    state: DeliveryState
    received_at: datetime | None
    playing_at: datetime | None
    finished_at: datetime | None
    seconds_played: float | None
    error: str | None
