"""Reach statistics: who was targeted, who played, and how many people that covers.

Definitions (also in docs/reach.md):
- targeted: deliveries snapshotted at dispatch, one per speaker (unique by device).
- pending, received, playing, played, failed, skipped, preempted, no_report: deliveries in each
  state now; they add up to targeted. `played` means reported played to the end. `no_report`
  means no final report by the deadline (a speaker that vanished mid-broadcast ends here).
- acknowledged: deliveries whose speaker sent any report at all (received or later).
- reach_rate: played / targeted.
- population_reached: population of the villages with at least one speaker that played; a
  village counts once however many of its speakers played.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from core.models import Region
from devices.models import Delivery, DeliveryState

STATES = [s.value for s in DeliveryState]


def _level_key(code: str, level: str) -> str:
    if level == "township":
        return code[:9] + "000"
    if level == "county":
        return code[:6] + "000000"
    return code


def reach(*, session: Session, occurrence_ids: Sequence[int], level: str = "township") -> dict:
    """Totals and a per-area breakdown (at `level`) for the deliveries of some occurrences."""
    played = case((Delivery.state == DeliveryState.played, 1), else_=0)
    rows = session.execute(
        select(
            Delivery.area_code,
            Delivery.state,
            func.count().label("n"),
            func.sum(case((Delivery.received_at.is_not(None), 1), else_=0)).label("received"),
            func.sum(played).label("played"),
        )
        .where(Delivery.occurrence_id.in_(list(occurrence_ids)))
        .group_by(Delivery.area_code, Delivery.state)
    ).all()

    totals = dict.fromkeys(STATES, 0)
    acknowledged = 0
    per_village: dict[str, dict[str, int]] = {}
    for area_code, state, n, received, _played in rows:
        totals[state] += n
        acknowledged += received or 0
        v = per_village.setdefault(area_code, dict.fromkeys(STATES, 0))
        v[state] += n

    codes = set(per_village)
    # Columns, not Region objects: building a few hundred ORM objects cost more than the query.
    regions = {
        r.code: r
        for r in session.execute(
            select(Region.code, Region.name, Region.level, Region.population).where(
                Region.code.in_(codes | {_level_key(c, level) for c in codes})
            )
        )
    }

    by_area: dict[str, dict] = {}
    population_targeted = population_reached = 0
    for area_code, counts in per_village.items():
        key = _level_key(area_code, level)
        region = regions.get(key)
        entry = by_area.setdefault(
            key,
            {
                "code": key,
                "name": region.name if region else key,
                "level": level,
                "targeted": 0,
                "played": 0,
                "failed": 0,
                "no_report": 0,
                "population": 0,
                "population_reached": 0,
            },
        )
        n = sum(counts.values())
        entry["targeted"] += n
        entry["played"] += counts["played"]
        entry["failed"] += counts["failed"]
        entry["no_report"] += counts["no_report"]
        village = regions.get(area_code)
        pop = village.population if village is not None and village.level == "village" else 0
        entry["population"] += pop
        population_targeted += pop
        if counts["played"] > 0:
            entry["population_reached"] += pop
            population_reached += pop
    for entry in by_area.values():
        entry["reach_rate"] = round(entry["played"] / entry["targeted"], 4) if entry["targeted"] else 0.0

    targeted = sum(totals[s] for s in STATES)
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
        "reach_rate": round(totals["played"] / targeted, 4) if targeted else 0.0,
        "population_targeted": population_targeted,
        "population_reached": population_reached,
        "by_area": sorted(by_area.values(), key=lambda e: e["code"]),
    }
