"""Response shapes for regions and users."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from core.models import RegionLevel, Role


class RegionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    name: str
    level: RegionLevel
    parent_code: str | None
    population: int
    households: int


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    area_code: str | None
    is_active: bool
    created_at: datetime
