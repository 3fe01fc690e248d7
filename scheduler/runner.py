"""The one scheduler runner: APScheduler 3.x on the asyncio loop, jobs kept in the database."""

from __future__ import annotations

import logging
from datetime import timedelta

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine

from scheduler import runtime
from scheduler import service as scheduler_service
from scheduler.models import Occurrence, OccurrenceStatus

log = logging.getLogger(__name__)

JOBS_TABLE = "apscheduler_jobs"
DISPATCH_JOB = "scheduler.jobs:dispatch_occurrence"
CLOSE_JOB = "scheduler.jobs:close_occurrence"
# Jobs always run, however late: the job itself decides whether it is too late to air
# (see service.dispatch and settings.scheduler.late_start_s), so nothing airs hours late
# and nothing is silently dropped.
JOB_DEFAULTS = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}


class SchedulerRunner:
    """Owns the AsyncIOScheduler. Start it inside the running event loop."""

    def __init__(self, *, engine: Engine, rt: runtime.Runtime) -> None:
        self._rt = rt
        self._scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE)},
            job_defaults=JOB_DEFAULTS,
            timezone=rt.settings.scheduler.timezone,
        )

    @property
    def running(self) -> bool:
        """True while the scheduler is started."""
        return self._scheduler.running

    def job_count(self) -> int:
        """Jobs waiting in the store."""
        return len(self._scheduler.get_jobs())

    def start(self) -> None:
        """Install the runtime, start APScheduler and re-plan every open occurrence."""
        runtime.install(self._rt)
        self._scheduler.start()
        with self._rt.session_factory() as session:
            occurrences = scheduler_service.open_occurrences(session=session)
        for occ in occurrences:
            self.schedule(occ)
        log.info("scheduler started; %d open occurrences planned", len(occurrences))

    def shutdown(self) -> None:
        """Stop without waiting for running jobs (they are idempotent and re-run on restart)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        runtime.install(None)

    def schedule(self, occ: Occurrence) -> None:
        """Plan the dispatch (lead time before start) and the close (at the deadline)."""
        lead = timedelta(seconds=self._rt.settings.scheduler.lead_time_s)
        if occ.status == OccurrenceStatus.scheduled:
            self._scheduler.add_job(
                DISPATCH_JOB,
                trigger="date",
                run_date=occ.start_at - lead,
                args=[occ.id],
                id=f"dispatch-{occ.id}",
                replace_existing=True,
            )
        self._scheduler.add_job(
            CLOSE_JOB,
            trigger="date",
            run_date=occ.deadline_at,
            args=[occ.id],
            id=f"close-{occ.id}",
            replace_existing=True,
        )
