"""What airs where and when, and which airings collide on a speaker.

An airing is one occurrence (planned, or projected from a rule beyond the planning horizon) with
its time span and the areas it reaches. Two airings of different broadcasts conflict when their
spans overlap and one's areas contain or lie inside the other's: some speaker gets both. At air
time the speaker resolves it (the higher priority preempts; equal priority waits its turn); here
it is shown beforehand so staff can move one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from core import regions
from scheduler.models import Priority


@dataclass(frozen=True)
class Airing:
    broadcast_id: int
    occurrence_id: int | None  # None: projected from the rule, not planned yet
    title: str
    priority: Priority
    start: datetime
    end: datetime
    areas: tuple[str, ...]  # target areas plus the areas of targeted devices
    status: str  # occurrence status, or the broadcast's when projected (submitted, approved, ...)


@dataclass(frozen=True)
class Conflict:
    first: Airing
    second: Airing
    winner: int | None  # broadcast id that preempts; None when equal priority (the later waits)

    def describe(self) -> dict:
        return {
            "broadcast_id": self.first.broadcast_id,
            "start": self.first.start,
            "other_broadcast_id": self.second.broadcast_id,
            "other_title": self.second.title,
            "other_priority": self.second.priority,
            "other_start": self.second.start,
            "other_end": self.second.end,
            "winner": self.winner,
            "outcome": (
                "queued: equal priority, the later one waits"
                if self.winner is None
                else f"broadcast {self.winner} preempts the other on shared speakers"
            ),
        }


def areas_overlap(a: Iterable[str], b: Iterable[str]) -> bool:
    """Some speaker lies in both: one area contains the other."""
    b = list(b)
    return any(regions.is_under(x, y) or regions.is_under(y, x) for x in a for y in b)


# Airings in these states will not play, so they conflict with nothing.
SILENT = frozenset({"cancelled", "missed", "refused", "failed", "rejected", "draft"})


def find(airings: Sequence[Airing], *, only_broadcast: int | None = None) -> list[Conflict]:
    """Overlapping pairs of airings of different broadcasts on shared areas (sweep by start)."""
    ordered = sorted((a for a in airings if a.status not in SILENT), key=lambda a: (a.start, a.broadcast_id))
    out: list[Conflict] = []
    for i, first in enumerate(ordered):
        for second in ordered[i + 1 :]:
            if second.start >= first.end:
                break
            if second.broadcast_id == first.broadcast_id or not areas_overlap(first.areas, second.areas):
                continue
            a, b = first, second
            if only_broadcast is not None:
                if only_broadcast not in (a.broadcast_id, b.broadcast_id):
                    continue
                if b.broadcast_id == only_broadcast:
                    a, b = b, a  # report from the asked-for broadcast's side
            rank_a, rank_b = a.priority.rank, b.priority.rank
            winner = None if rank_a == rank_b else (a if rank_a > rank_b else b).broadcast_id
            out.append(Conflict(a, b, winner))
    return out


def span(start: datetime, duration_ms: int) -> tuple[datetime, datetime]:
    return start, start + timedelta(milliseconds=max(duration_ms, 1))
