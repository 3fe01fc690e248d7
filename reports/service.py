"""Reach over a period (day, week, month), by township or village, kept fast by daily roll-ups.

The figures are those of reports.reach, named as docs/reach.md defines them: deliveries are unique
by speaker per occurrence; `played` means reported played to the end; a village's population counts
once in `population_reached` if any of its speakers played anything in the period (and once in
`population_targeted` if any was targeted).

An occurrence belongs to the local day (scheduler time zone) on which it started. A day is rolled
up (its rows written to `reach_daily`) once it has ended and every occurrence that started on it is
final; until then its figures are computed from the raw deliveries on every request. Roll-ups are
made lazily, by the first report that covers the day (`ensure_rollups`), and made again when a
delivery of the day changed after its roll-up: a speaker's late report of an airing it played
during an outage (devices.models.DeliverySettlement, docs/reach.md).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import case, delete, func, insert, select
from sqlalchemy.orm import Session

from core import errors, regions
from core.clock import utcnow
from core.models import Region, RegionLevel
from devices.models import Delivery, DeliverySettlement, DeliveryState
from reports.models import ReachDaily, ReachDay
from reports.reach import COUNTS, POPULATIONS, finish_area, new_area, rate
from scheduler.models import Occurrence, OccurrenceStatus

log = logging.getLogger(__name__)

PERIODS = ("day", "week", "month")
# A month report covers at most this many days (a safety bound for custom ranges).
MAX_DAYS = 31
_OPEN = (OccurrenceStatus.scheduled, OccurrenceStatus.dispatched)


@dataclass(frozen=True)
class Period:
    """Inclusive local days [first, last] and a label."""

    kind: str
    first: date
    last: date

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]


def period_of(*, kind: str, day: date) -> Period:
    """The day, the ISO week (Monday first) or the calendar month holding `day`."""
    if kind == "day":
        return Period(kind, day, day)
    if kind == "week":
        first = day - timedelta(days=day.weekday())
        return Period(kind, first, first + timedelta(days=6))
    if kind == "month":
        first = day.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return Period(kind, first, following - timedelta(days=1))
    raise errors.InvalidInput("period", f"period must be one of {', '.join(PERIODS)}")


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants where a local day starts and ends."""
    start = datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone).astimezone(UTC)
    return start, end


def _aggregate(session: Session, start: datetime, end: datetime, prefix: str) -> list[tuple]:
    """(area_code, targeted, played, failed, no_report, other) from raw deliveries in [start, end).

    `other` is every delivery neither played, failed nor without report: skipped or preempted
    (and, while a day is still open, pending, received or playing).
    """

    def count(*states: DeliveryState):
        return func.sum(case((Delivery.state.in_(states), 1), else_=0))

    return list(
        session.execute(
            select(
                Delivery.area_code,
                func.count(),
                count(DeliveryState.played),
                count(DeliveryState.failed),
                count(DeliveryState.no_report),
                func.sum(
                    case(
                        (
                            Delivery.state.in_(
                                [DeliveryState.played, DeliveryState.failed, DeliveryState.no_report]
                            ),
                            0,
                        ),
                        else_=1,
                    )
                ),
            )
            .join(Occurrence, Occurrence.id == Delivery.occurrence_id)
            .where(
                Occurrence.start_at >= start,
                Occurrence.start_at < end,
                Delivery.area_code.startswith(prefix),
            )
            .group_by(Delivery.area_code)
        ).all()
    )


def closable(*, session: Session, day: date, zone: ZoneInfo, now: datetime | None = None) -> bool:
    """True when the day has ended and no occurrence that started on it is still open."""
    start, end = day_bounds(day, zone)
    if end > (now or utcnow()):
        return False
    still_open = session.scalar(
        select(func.count())
        .select_from(Occurrence)
        .where(Occurrence.start_at >= start, Occurrence.start_at < end, Occurrence.status.in_(_OPEN))
    )
    return not still_open


def rollup_day(*, session: Session, day: date, zone: ZoneInfo) -> int:
    """Write (or rewrite) the roll-up rows of one local day; return how many areas it has."""
    # Taken before the deliveries are read: a revision recorded after this is newer than the roll-up.
    started = utcnow()
    start, end = day_bounds(day, zone)
    rows = _aggregate(session, start, end, "")
    session.execute(delete(ReachDaily).where(ReachDaily.day == day))
    if rows:
        session.execute(
            insert(ReachDaily),
            [
                {"day": day, "area_code": r[0], **dict(zip(COUNTS, map(int, r[1:]), strict=True))}
                for r in rows
            ],
        )
    marker = session.get(ReachDay, day)
    if marker is None:
        session.add(ReachDay(day=day, zone=zone.key, rolled_up_at=started))
    else:
        marker.zone, marker.rolled_up_at = zone.key, started
    session.flush()
    log.info("rolled up reach of %s (%s): %d areas", day, zone.key, len(rows))
    return len(rows)


def ensure_rollups(
    *, session: Session, days: list[date], zone: ZoneInfo, now: datetime | None = None
) -> list[date]:
    """Roll up every day of `days` that is closable and not rolled up yet (in this zone), or whose
    deliveries changed since its roll-up; return the days rolled up."""
    done: dict[date, datetime] = dict(
        session.execute(
            select(ReachDay.day, ReachDay.rolled_up_at).where(
                ReachDay.day.in_(days), ReachDay.zone == zone.key
            )
        ).all()
    )
    revised = _revised_since_rollup(session, done, zone)
    made = []
    for day in days:
        if day in done and day not in revised:
            continue
        if closable(session=session, day=day, zone=zone, now=now):
            rollup_day(session=session, day=day, zone=zone)
            made.append(day)
        elif day in revised:
            # Rolled up before its time (by hand, or a clock ahead): raw figures until it closes.
            session.execute(delete(ReachDaily).where(ReachDaily.day == day))
            session.execute(delete(ReachDay).where(ReachDay.day == day))
            log.info("dropped the roll-up of %s (%s): deliveries changed, day not closed", day, zone.key)
    return made


def _revised_since_rollup(session: Session, rolled: dict[date, datetime], zone: ZoneInfo) -> set[date]:
    """The rolled-up days with an occurrence whose deliveries changed at or after the roll-up."""
    if not rolled:
        return set()
    first, _ = day_bounds(min(rolled), zone)
    _, last = day_bounds(max(rolled), zone)
    stale = set()
    for start_at, revised_at in session.execute(
        select(Occurrence.start_at, DeliverySettlement.revised_at)
        .join(Occurrence, Occurrence.id == DeliverySettlement.occurrence_id)
        .where(
            DeliverySettlement.revised_at.is_not(None),
            Occurrence.start_at >= first,
            Occurrence.start_at < last,
        )
    ):
        day = start_at.astimezone(zone).date()
        if day in rolled and revised_at >= rolled[day]:
            stale.add(day)
    if stale:
        log.info("reach of %s changed after the roll-up (late reports)", ", ".join(map(str, sorted(stale))))
    return stale


def default_level(area_code: str) -> str:
    """Townships for a county, villages for a township or village."""
    return "township" if regions.level_of(area_code) is RegionLevel.county else "village"


def period_report(
    *,
    session: Session,
    area_code: str,
    period: Period,
    zone: ZoneInfo,
    level: str | None = None,
    now: datetime | None = None,
    rollups: bool = True,
) -> dict:
    """Reach of every airing that started in the period, on the speakers under `area_code`.

    Rolled-up days are read from `reach_daily`; the others (today, days with open airings) from
    the raw deliveries. Returns totals, a per-area breakdown at `level` and a per-day series.
    `rollups=False` computes every day from the raw deliveries and writes nothing (to check the
    roll-ups against the rows they summarise).
    """
    if len(period.days) > MAX_DAYS:
        raise errors.InvalidInput("period", f"a report covers at most {MAX_DAYS} days")
    level = level or default_level(area_code)
    days = period.days
    prefix = regions.code_prefix(area_code)
    rolled: set[date] = set()
    if rollups:
        ensure_rollups(session=session, days=days, zone=zone, now=now)
        rolled = set(
            session.scalars(
                select(ReachDay.day).where(ReachDay.day.in_(days), ReachDay.zone == zone.key)
            ).all()
        )
    per_area: dict[str, list[int]] = defaultdict(lambda: [0] * len(COUNTS))
    per_day: dict[date, list[int]] = {d: [0] * len(COUNTS) for d in days}
    if rolled:
        # Summed by the database: a month by village is ~10,000 roll-up rows but only a few hundred
        # areas and 31 days, and adding them up in Python cost most of the report's time.
        sums = [func.sum(getattr(ReachDaily, c)) for c in COUNTS]
        low, high = regions.code_range(area_code)
        where = (ReachDaily.day.in_(rolled), ReachDaily.area_code.between(low, high))
        for code, *counts in session.execute(
            select(ReachDaily.area_code, *sums).where(*where).group_by(ReachDaily.area_code)
        ):
            per_area[code] = [int(v) for v in counts]
        for day, *counts in session.execute(
            select(ReachDaily.day, *sums).where(*where).group_by(ReachDaily.day)
        ):
            per_day[day] = [int(v) for v in counts]
    for day in days:
        if day in rolled:
            continue
        start, end = day_bounds(day, zone)
        for code, *counts in _aggregate(session, start, end, prefix):
            for i, n in enumerate(counts):
                per_area[code][i] += int(n or 0)
                per_day[day][i] += int(n or 0)

    codes = set(per_area)
    keys = {code: regions.at_level(code, level) for code in codes}
    names = {
        r.code: r
        for r in session.execute(
            select(Region.code, Region.name, Region.level, Region.population).where(
                Region.code.in_(codes | set(keys.values()))
            )
        )
    }
    by_area: dict[str, dict] = {}
    totals = dict.fromkeys(COUNTS, 0) | dict.fromkeys(POPULATIONS, 0)
    for code, counts in per_area.items():
        key = keys[code]
        entry = by_area.get(key)
        if entry is None:
            region = names.get(key)
            entry = by_area[key] = new_area(key, region.name if region else key, level)
        for name, n in zip(COUNTS, counts, strict=True):
            entry[name] += n
            totals[name] += n
        own = names.get(code)
        population = own.population if own is not None and own.level == RegionLevel.village else 0
        if counts[0]:
            entry["population_targeted"] += population
            totals["population_targeted"] += population
        if counts[1]:
            entry["population_reached"] += population
            totals["population_reached"] += population
    for entry in by_area.values():
        finish_area(entry)
    totals["reach_rate"] = rate(totals["played"], totals["targeted"])
    return {
        "area": area_code,
        "period": period.kind,
        "first": period.first.isoformat(),
        "last": period.last.isoformat(),
        "level": level,
        "zone": zone.key,
        "rolled_up_days": sorted(d.isoformat() for d in rolled),
        **totals,
        "by_area": sorted(by_area.values(), key=lambda e: e["code"]),
        "by_day": [
            {"day": d.isoformat(), **dict(zip(COUNTS, c, strict=True)), "reach_rate": rate(c[1], c[0])}
            for d, c in sorted(per_day.items())
        ],
    }
