"""APScheduler job functions, referenced by text ("scheduler.jobs:...") and taking only primitives.

The runner gives each distinct instant one job, not each occurrence: airings due together (the
07:00 slot across a county) are dispatched as one batch, and occurrences whose reports close
together are closed together. The instant travels as ISO 8601 text, exact to the microsecond.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from scheduler import runtime
from scheduler import service as scheduler_service


async def dispatch_due(at: str) -> None:
    """Publish the play commands of every occurrence whose dispatch time has come by `at`."""
    rt = runtime.current()
    await asyncio.to_thread(
        scheduler_service.dispatch_due,
        session_factory=rt.session_factory,
        link=rt.link,
        settings=rt.settings,
        at=datetime.fromisoformat(at),
    )


async def close_due(at: str) -> None:
    """At a reporting deadline `at`, settle every occurrence whose deadline it is."""
    rt = runtime.current()
    await asyncio.to_thread(
        scheduler_service.close_due, session_factory=rt.session_factory, deadline=datetime.fromisoformat(at)
    )


# Jobs of one occurrence each, as versions before batching stored them: still run after an upgrade.


async def dispatch_occurrence(occurrence_id: int) -> None:
    """Publish one occurrence's play commands."""
    rt = runtime.current()
    await asyncio.to_thread(
        scheduler_service.dispatch,
        session_factory=rt.session_factory,
        link=rt.link,
        settings=rt.settings,
        occurrence_id=occurrence_id,
    )


async def close_occurrence(occurrence_id: int) -> None:
    """At the reporting deadline, settle every delivery of one occurrence."""
    rt = runtime.current()
    await asyncio.to_thread(
        scheduler_service.close, session_factory=rt.session_factory, occurrence_id=occurrence_id
    )
