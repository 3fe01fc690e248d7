"""APScheduler job functions, referenced by text ("scheduler.jobs:...") and taking only ids."""

from __future__ import annotations

import asyncio

from scheduler import runtime
from scheduler import service as scheduler_service


async def dispatch_occurrence(occurrence_id: int) -> None:
    """Publish an occurrence's play commands (a lead time before it starts)."""
    rt = runtime.current()
    await asyncio.to_thread(
        scheduler_service.dispatch,
        session_factory=rt.session_factory,
        link=rt.link,
        settings=rt.settings,
        occurrence_id=occurrence_id,
    )


async def close_occurrence(occurrence_id: int) -> None:
    """At the reporting deadline, settle every delivery of an occurrence."""
    rt = runtime.current()
    await asyncio.to_thread(
        scheduler_service.close, session_factory=rt.session_factory, occurrence_id=occurrence_id
    )
