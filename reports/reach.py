"""Reach figures: the one vocabulary of every reach report, and the reach of one broadcast.

Every report (one broadcast's airings, a day, a week, a month) counts deliveries — one per speaker
per airing — with the same names, defined once in docs/reach.md ("Figures"):

- COUNTS, per area, per day and in total: `targeted`, `played`, `failed`, `no_report`, `other`
  (targeted minus the three before it: skipped, preempted, and while airings are open also
  pending, received, playing); `reach_rate` = played / targeted.
- POPULATIONS: `population_targeted` (villages with a targeted speaker) and `population_reached`
  (villages where a speaker played), each village once.
- One broadcast's report adds the delivery states (STATES) and `acknowledged`.

`broadcast_reach` is one broadcast's (its occurrences'); reports.service.period_report a period's.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, String, bindparam, func, literal_column, select, type_coerce
from sqlalchemy.orm import Session

from core import regions
from core.models import Region, RegionLevel
from devices.models import Delivery, DeliveryState
from scheduler.models import Broadcast, BroadcastStatus, OccurrenceStatus

LEVELS = [RegionLevel.county, RegionLevel.township, RegionLevel.village]

COUNTS = ("targeted", "played", "failed", "no_report", "other")
POPULATIONS = ("population_targeted", "population_reached")
STATES = [s.value for s in DeliveryState]
# API v1 name of an area's `population_targeted` in `by_area`, kept for the clients that read it.
V1_AREA_POPULATION = "population"

_D = Delivery.__table__
_R = Region.__table__


def rate(played: int, targeted: int) -> float:
    """reach_rate: played / targeted, to four places (0 when nothing was targeted)."""
    return round(played / targeted, 4) if targeted else 0.0


def new_area(code: str, name: str, level: str) -> dict:
    """A `by_area` entry with every count at zero."""
    counts = dict.fromkeys(COUNTS, 0) | dict.fromkeys(POPULATIONS, 0)
    return {"code": code, "name": name, "level": level} | counts


def finish_area(entry: dict) -> dict:
    """Complete a `by_area` entry whose counts are in: its reach rate and the API v1 name."""
    entry["reach_rate"] = rate(entry["played"], entry["targeted"])
    entry[V1_AREA_POPULATION] = entry["population_targeted"]
    return entry


def _statement(level: str) -> Select:
    """One row per area of the occurrences' deliveries: a count per state, how many speakers
    acknowledged, the village's region (level and population; NULL for an unknown code), and the
    area at `level` it belongs to (code, and name when that region exists).

    Built once per level (compiled once) and run on the Core connection: per call, the ORM's
    result handling and binding a few hundred region codes in an IN list had cost more than the
    database spent on the broadcast (measured with 10,000,000 deliveries).
    """
    counts = [
        # count(*) FILTER (WHERE ...): SQLite >= 3.30 and PostgreSQL; a third faster on PostgreSQL
        # than sum(CASE ...). The state constants are written into the SQL: nothing to bind per call.
        func.count().filter(_D.c.state == literal_column(f"'{state}'")).label(state)
        for state in STATES
    ]
    per_area = (
        select(_D.c.area_code, func.count(_D.c.received_at).label("acknowledged"), *counts)
        .where(_D.c.occurrence_id.in_(bindparam("occurrence_ids", expanding=True)))
        .group_by(_D.c.area_code)
        .subquery("per_area")
    )
    village = _R.alias("village")
    code = per_area.c.area_code
    # core.regions.at_level in SQL: the village code's first 9 (township) or 6 (county) digits, padded
    if level == "township":
        key = func.substr(code, 1, 9, type_=String) + literal_column("'000'", String)
    elif level == "county":
        key = func.substr(code, 1, 6, type_=String) + literal_column("'000000'", String)
    else:
        key = code
    area = _R.alias("area")
    return select(
        per_area, type_coerce(village.c.level, String), village.c.population, key.label("key"), area.c.name
    ).select_from(per_area.outerjoin(village, village.c.code == code).outerjoin(area, area.c.code == key))


_STATEMENTS: dict[str, Select] = {}


def broadcast_reach(*, session: Session, occurrence_ids: Sequence[int], level: str = "township") -> dict:
    """Totals and a per-area breakdown (at `level`) of the deliveries of some occurrences."""
    kind = level if level in ("township", "county") else "village"  # any other level: by area code
    statement = _STATEMENTS.get(kind)
    if statement is None:
        statement = _STATEMENTS[kind] = _statement(kind)
    # (area_code, acknowledged, a count per state in STATES order, village level, population,
    #  code and name of the area at `level`)
    rows = session.connection().execute(statement, {"occurrence_ids": list(occurrence_ids)}).all()
    n = len(STATES)
    # Totals column by column (in C), then one pass over the areas for the breakdown.
    columns = zip(*(row[2 : 2 + n] for row in rows), strict=True)
    totals = dict(zip(STATES, map(sum, columns), strict=True)) if rows else dict.fromkeys(STATES, 0)
    acknowledged = sum(row[1] for row in rows)
    population_targeted = population_reached = 0
    by_area: dict[str, dict] = {}
    played_at, failed_at, no_report_at = (2 + STATES.index(s) for s in ("played", "failed", "no_report"))
    for row in rows:
        key = row[4 + n]
        entry = by_area.get(key)
        if entry is None:
            entry = by_area[key] = new_area(key, row[5 + n] or key, level)
        played = row[played_at]
        entry["targeted"] += sum(row[2 : 2 + n])
        entry["played"] += played
        entry["failed"] += row[failed_at]
        entry["no_report"] += row[no_report_at]
        if row[2 + n] == "village":
            pop = row[3 + n] or 0
            entry["population_targeted"] += pop
            population_targeted += pop
            if played > 0:
                entry["population_reached"] += pop
                population_reached += pop
    for entry in by_area.values():
        entry["other"] = entry["targeted"] - entry["played"] - entry["failed"] - entry["no_report"]
        finish_area(entry)

    targeted = sum(totals.values())
    return {
        "targeted": targeted,
        "acknowledged": acknowledged,
        "received": totals["received"],
        "pending": totals["pending"],
        "playing": totals["playing"],
        "played": totals["played"],
        "failed": totals["failed"],
        "skipped": totals["skipped"],
        "preempted": totals["preempted"],
        "no_report": totals["no_report"],
        "other": targeted - totals["played"] - totals["failed"] - totals["no_report"],
        "reach_rate": rate(totals["played"], targeted),
        "population_targeted": population_targeted,
        "population_reached": population_reached,
        "by_area": sorted(by_area.values(), key=lambda e: e["code"]),
    }


def of_broadcast(*, session: Session, broadcast: Broadcast, level: str | None = None) -> dict:
    """A broadcast's reach over all its occurrences, and whether the figures are final (docs/reach.md).

    Absent `level`: by township for a county-wide broadcast, else by village.
    """
    if level is None:
        widest = min((regions.level_of(c) for c in broadcast.target_areas), default=RegionLevel.village,
                     key=LEVELS.index)  # fmt: skip
        level = "township" if widest is RegionLevel.county else "village"
    occurrence_ids = [o.id for o in broadcast.occurrences]
    figures = broadcast_reach(session=session, occurrence_ids=occurrence_ids, level=level)
    final = broadcast.status in (
        BroadcastStatus.done, BroadcastStatus.cancelled, BroadcastStatus.rejected
    ) and all(o.status not in (OccurrenceStatus.scheduled, OccurrenceStatus.dispatched)
              for o in broadcast.occurrences)  # fmt: skip
    return {"broadcast_id": broadcast.id, "status": broadcast.status, "final": final, **figures}
