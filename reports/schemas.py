"""Read shapes of the period reach report (`reports.service.period_report`) for the JSON API."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

# Days a report may be asked about: others are typos, and far ones overflow the date arithmetic.
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2099, 12, 31)


class Counts(BaseModel):
    """Deliveries (one per speaker per airing) by final state; see docs/reach.md."""

    targeted: int = Field(description="Deliveries: speakers targeted, once per airing.")
    played: int = Field(description="Reported played to the end.")
    failed: int = Field(description="Reported failed.")
    no_report: int = Field(description="No final report by the airing's deadline.")
    other: int = Field(description="Skipped or preempted (and, for an open day, not final yet).")
    reach_rate: float = Field(description="played / targeted (0 when nothing was targeted).")


class AreaReachRead(Counts):
    code: str = Field(description="Township or village code (the breakdown level).")
    name: str
    level: str
    population_targeted: int = Field(description="Population of its villages with a targeted speaker.")
    population_reached: int = Field(description="Population of its villages where a speaker played.")
    population: int = Field(description="API v1 name of `population_targeted`, kept for its clients.")


class DayReachRead(Counts):
    day: date = Field(description="Local day (scheduler time zone) the airings started on.")


class PeriodReachRead(Counts):
    area: str = Field(description="The area reported on: speakers under it.")
    area_name: str
    period: Literal["day", "week", "month"]
    first: date = Field(description="First local day of the period.")
    last: date = Field(description="Last local day of the period (inclusive).")
    level: Literal["township", "village"] = Field(description="Level of `by_area`.")
    zone: str = Field(description="Time zone the days are counted in.")
    rolled_up_days: list[date] = Field(description="Days read from the daily roll-ups (the rest: raw).")
    population_targeted: int
    population_reached: int = Field(description="A village counts once if any of its speakers played.")
    by_area: list[AreaReachRead]
    by_day: list[DayReachRead]
