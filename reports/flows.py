"""The report use cases: a period's reach, which keeps the daily roll-ups it had to make.

Reading a period makes the roll-ups of closed days it covers (reports.service.ensure_rollups);
they are a cache of the raw deliveries, committed here so the next report reads them instead of
summing the raw rows again.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from core.db import transaction
from reports import service as report_service


def period_reach(
    *, session: Session, area_code: str, period: report_service.Period, zone: ZoneInfo, level: str | None
) -> dict:
    """Reach of every airing that started in the period on the area's speakers (docs/reach.md)."""
    with transaction(session):
        return report_service.period_report(
            session=session, area_code=area_code, period=period, zone=zone, level=level
        )
