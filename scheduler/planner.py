"""What a use case needs from the scheduler runner: plan the jobs of occurrences, or drop them.

`SchedulerRunner` is the real one; `MemoryPlanner` records the calls, for use-case tests without
a running scheduler.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from scheduler.models import Occurrence


class JobPlanner(Protocol):
    """Gives committed occurrences their dispatch and close jobs (or hands them to the active runner)."""

    def schedule(self, occ: Occurrence) -> int: ...

    def unschedule(self, occurrence_ids: Iterable[int]) -> None: ...


class MemoryPlanner:
    """A JobPlanner that only remembers what it was asked."""

    def __init__(self) -> None:
        self.scheduled: list[int] = []
        self.unscheduled: list[int] = []

    def schedule(self, occ: Occurrence) -> int:
        self.scheduled.append(occ.id)
        return 1

    def unschedule(self, occurrence_ids: Iterable[int]) -> None:
        self.unscheduled.extend(occurrence_ids)
