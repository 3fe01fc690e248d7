"""APScheduler job functions, referenced by text ("scheduler.jobs:...") and stored with primitives only.

APScheduler's persistent store keeps a job as a text reference plus its arguments, so a job cannot
carry live objects. Its dependencies come as its first argument instead: the runner's executor
(`scheduler.runner.ContextExecutor`) calls every job of this module as ``job(*args, ctx=context)``
with the `JobContext` the runner was built with — database, settings and the command sender.
(`ctx` is keyword-only with a default because APScheduler checks, when a job is added, that the
stored arguments fill every required parameter.)

The runner gives each distinct instant one job, not each occurrence: airings due together (the
07:00 slot across a county) are dispatched as one batch, and occurrences whose reports close
together are closed together. The instant travels as ISO 8601 text, exact to the microsecond.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from devices.commands import CommandSender
from scheduler import dispatch


@dataclass(frozen=True)
class JobContext:
    """What jobs need at run time: given to every job of this module by the runner's executor."""

    settings: Settings
    session_factory: sessionmaker[Session]
    sender: CommandSender


def _given(ctx: JobContext | None) -> JobContext:
    if ctx is None:
        raise RuntimeError("scheduler jobs run through SchedulerRunner, whose executor gives them `ctx`")
    return ctx


async def dispatch_due(at: str, *, ctx: JobContext | None = None) -> None:
    """Publish the play commands of every occurrence whose dispatch time has come by `at`."""
    ctx = _given(ctx)
    await asyncio.to_thread(
        dispatch.dispatch_due,
        session_factory=ctx.session_factory,
        sender=ctx.sender,
        settings=ctx.settings,
        at=datetime.fromisoformat(at),
    )


async def close_due(at: str, *, ctx: JobContext | None = None) -> None:
    """At a reporting deadline `at`, settle every occurrence whose deadline it is."""
    ctx = _given(ctx)
    await asyncio.to_thread(
        dispatch.close_due, session_factory=ctx.session_factory, deadline=datetime.fromisoformat(at)
    )


# Jobs of one occurrence each, as versions before batching stored them: still run after an upgrade.


async def dispatch_occurrence(occurrence_id: int, *, ctx: JobContext | None = None) -> None:
    """Publish one occurrence's play commands."""
    ctx = _given(ctx)
    await asyncio.to_thread(
        dispatch.dispatch,
        session_factory=ctx.session_factory,
        sender=ctx.sender,
        settings=ctx.settings,
        occurrence_id=occurrence_id,
    )


async def close_occurrence(occurrence_id: int, *, ctx: JobContext | None = None) -> None:
    """At the reporting deadline, settle every delivery of one occurrence."""
    ctx = _given(ctx)
    await asyncio.to_thread(dispatch.close, session_factory=ctx.session_factory, occurrence_id=occurrence_id)
