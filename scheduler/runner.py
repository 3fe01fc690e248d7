"""The one scheduler runner: APScheduler 3.x on the asyncio loop, jobs kept in the database.

Only near-term work is an APScheduler job: recurring broadcasts live in our own tables and are
expanded into occurrences over a rolling horizon (`planning.extend_horizon`); occurrences whose
dispatch falls within `JOB_WINDOW` are covered by a dispatch job and a close job. A planner tick
every `PLAN_INTERVAL_S` rolls both forward. So start-up and memory grow with what airs soon, not
with the number of broadcasts times their airings.

Jobs are per instant, not per occurrence: one dispatch job per distinct dispatch time
(`dispatch@<instant>`) publishes every occurrence due by then as one batch (`dispatch.dispatch_due`:
one transaction to prepare, the commands highest priority first, one to record), and one close
job per distinct reporting deadline (`close@<instant>`). Programmes cluster at 07:00, 12:00 and
18:30; a county's 07:00 slot is one job, not hundreds.

Exactly one runner is active per database (`scheduler.lock`); every other server process stands
by, tries the lock every `LOCK_RETRY_S` and takes over when it frees. API routes call `schedule` /
`unschedule` on whichever runner their process has. On a stand-by, `schedule` of an occurrence due
within the job window sends its id to the active runner (PostgreSQL NOTIFY, `RunnerLock.notify_holder`),
which plans it at once; on SQLite (no notifications) the active runner's next tick plans it. An
active runner whose lock connection fails steps down to stand-by and competes for the lock again.

Misfires: jobs always run however late (`misfire_grace_time=None`); the dispatch itself decides,
per occurrence: within its late-start window it airs (speakers start at once), after it the
occurrence is `missed`. Airings that fell entirely while no runner was up are planned as `missed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_PAUSED
from sqlalchemy import Engine, select

from core.clock import utcnow
from core.db import session_scope
from scheduler import planning
from scheduler.jobs import JobContext
from scheduler.lock import LockLost, RunnerLock
from scheduler.models import Occurrence, OccurrenceStatus
from scheduler.planning import dispatch_ahead

log = logging.getLogger(__name__)

JOBS_TABLE = "apscheduler_jobs"
JOBS_MODULE = "scheduler.jobs"
DISPATCH_JOB = f"{JOBS_MODULE}:dispatch_due"
CLOSE_JOB = f"{JOBS_MODULE}:close_due"
# Jobs always run, however late: the job itself decides whether it is too late to air
# (see dispatch.dispatch_due and settings.scheduler.late_start_s), so nothing airs hours late
# and nothing is silently dropped.
JOB_DEFAULTS = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}
# An instant's job re-added while its batch still runs (an airing approved for that very instant)
# must run too, not be skipped as a second instance: batches queue on the dispatch lock.
INSTANT_JOB_INSTANCES = 16
# Occurrences get APScheduler jobs once their dispatch is this close (must exceed PLAN_INTERVAL_S).
JOB_WINDOW = timedelta(minutes=10)
# The planner tick: extend the horizon, add jobs for occurrences entering the window.
PLAN_INTERVAL_S = 60.0
# A stand-by runner tries to take the lock this often: the bound on a takeover after the runner's
# process dies (one cheap query per try).
LOCK_RETRY_S = 2.0
# The active runner's notice listener waits this long per call: how long stopping may take.
NOTICE_WAIT_S = 1.0


def instant_job_id(kind: str, at: datetime) -> str:
    """The id of the one `dispatch` or `close` job at an instant: `dispatch@2026-12-01T06:59:55+00:00`."""
    return f"{kind}@{at.astimezone(UTC).isoformat()}"


class _WithContext:
    """A stored job as the executor runs it: its function given the runner's JobContext."""

    def __init__(self, job, context: JobContext) -> None:
        self._job = job
        self.func = functools.partial(job.func, ctx=context)

    def __getattr__(self, name: str):
        return getattr(self._job, name)

    def __str__(self) -> str:
        return str(self._job)


class ContextExecutor(AsyncIOExecutor):
    """The asyncio executor, handing every job of `scheduler.jobs` its dependencies (`ctx=`).

    Stored jobs keep only their text reference and primitive arguments (APScheduler pickles them);
    this is where they meet the live objects, passed in explicitly by whoever builds the runner.
    """

    def __init__(self, context: JobContext) -> None:
        super().__init__()
        self.context = context

    def _do_submit_job(self, job, run_times):
        if getattr(job, "func_ref", "").startswith(f"{JOBS_MODULE}:"):
            job = _WithContext(job, self.context)
        return super()._do_submit_job(job, run_times)


class SchedulerRunner:
    """Owns the AsyncIOScheduler. Start it inside the running event loop.

    It is the use cases' `JobPlanner` (`schedule` / `unschedule`), and its jobs get `context`.
    """

    def __init__(self, *, engine: Engine, context: JobContext) -> None:
        self._ctx = context
        self._lock = RunnerLock(engine)
        self._scheduler = AsyncIOScheduler(
            jobstores={
                "default": SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE),
                "memory": MemoryJobStore(),  # the planner tick: recreated at every start
            },
            executors={"default": ContextExecutor(context)},
            job_defaults=JOB_DEFAULTS,
            timezone=context.settings.scheduler.timezone,
        )
        # Ids of the instant jobs waiting in the store (refreshed at each planner tick); a job leaves
        # it when submitted, so an airing added for that instant afterwards gets a job of its own.
        self._jobs: set[str] = set()
        self._scheduler.add_listener(self._submitted, EVENT_JOB_SUBMITTED)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._standby: asyncio.Task[None] | None = None
        self._listener: threading.Thread | None = None
        self._stop_listening = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.active = False

    @property
    def running(self) -> bool:
        """True while this process runs the scheduler (False on a stand-by)."""
        return self.active

    @property
    def role(self) -> str:
        """`active` (runs the scheduler), `standby` (waits for the lock) or `stopped`."""
        if self.active:
            return "active"
        return "standby" if self._standby is not None else "stopped"

    def describe_lock(self) -> str:
        """Which lock elects the runner."""
        return self._lock.describe()

    def job_count(self) -> int:
        """Jobs waiting in the store."""
        return len(self._scheduler.get_jobs(jobstore="default"))

    def start(self) -> None:
        """Take the runner lock and start, or stand by; either way keep competing for the lock."""
        self._loop = asyncio.get_running_loop()
        if self._lock.acquire():
            self._activate()
        else:
            log.warning("another scheduler runner holds the %s; standing by", self._lock.describe())
        self._standby = self._loop.create_task(self._wait_for_lock())

    async def _wait_for_lock(self) -> None:
        while True:
            await asyncio.sleep(LOCK_RETRY_S)
            if self.active:
                continue
            try:
                got = await asyncio.to_thread(self._lock.acquire)
            except Exception as exc:  # the database is away: keep trying
                log.warning("could not try the %s: %s", self._lock.describe(), exc)
                continue
            if got:
                log.info("took over as the scheduler runner")
                try:
                    self._activate()
                except Exception:  # running, but planning failed: the planner tick retries
                    log.exception("planning after the takeover failed")

    def _activate(self) -> None:
        if self._scheduler.state == STATE_PAUSED:
            self._scheduler.resume()
        else:
            self._scheduler.start()
        self.active = True
        # The tick and the listener first: if planning now fails, the tick tries again.
        self._scheduler.add_job(
            self._tick, trigger="interval", seconds=PLAN_INTERVAL_S, id="planner", jobstore="memory",
            replace_existing=True,
        )  # fmt: skip
        if self._lock.notifies:
            self._stop_listening.clear()
            self._listener = threading.Thread(target=self._listen, name="scheduler-notices", daemon=True)
            self._listener.start()
        planned = self.plan()
        log.info("scheduler started (%s); %d occurrences have jobs", self._lock.describe(), planned)

    def _listen(self) -> None:
        """Listener thread: hand occurrence ids other processes planned, or a lost lock, to the loop."""
        assert self._loop is not None
        while not self._stop_listening.is_set():
            try:
                payloads = self._lock.wait_for_notices(NOTICE_WAIT_S)
            except LockLost as exc:
                self._loop.call_soon_threadsafe(self._step_down, str(exc))
                return
            ids = [int(p) for p in payloads if p.isdigit()]
            if ids:
                self._loop.call_soon_threadsafe(self._plan_soon, ids)

    def _plan_soon(self, occurrence_ids: list[int]) -> None:
        if not self.active:
            return
        task = asyncio.get_running_loop().create_task(self._plan_notified(occurrence_ids))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _plan_notified(self, occurrence_ids: list[int]) -> None:
        try:
            occurrences = await asyncio.to_thread(self._load, occurrence_ids)
            for occ in occurrences:
                self.schedule(occ)
        except Exception:  # the planner tick picks them up
            log.exception("planning occurrences %s from another process failed", occurrence_ids)

    def _load(self, occurrence_ids: list[int]) -> list[Occurrence]:
        with self._ctx.session_factory() as session:
            return list(session.scalars(select(Occurrence).where(Occurrence.id.in_(occurrence_ids))).all())

    def _step_down(self, reason: str) -> None:
        """The lock is gone: stop running jobs (another process may take over) and compete again."""
        if not self.active:
            return
        log.error("lost the scheduler runner lock (%s); standing by", reason)
        self.active = False
        self._scheduler.pause()

    async def _tick(self) -> None:
        occurrences = await asyncio.to_thread(self._collect)
        self._add_jobs(occurrences)

    def _collect(self) -> list[Occurrence]:
        settings = self._ctx.settings
        with session_scope(self._ctx.session_factory) as session:
            planning.extend_horizon(session=session, settings=settings)
        ahead = dispatch_ahead(settings.scheduler)
        with self._ctx.session_factory() as session:
            return planning.due_occurrences(session=session, until=utcnow() + ahead + JOB_WINDOW)

    def _add_jobs(self, occurrences: Iterable[Occurrence]) -> int:
        self._jobs = {job.id for job in self._scheduler.get_jobs(jobstore="default")}
        n = 0
        for occ in occurrences:
            n += self.schedule(occ)
        return n

    def plan(self) -> int:
        """Extend the horizon and give every occurrence due within the window its jobs, now."""
        return self._add_jobs(self._collect())

    def shutdown(self) -> None:
        """Stop without waiting for running jobs (they are idempotent and re-run on restart)."""
        if self._standby is not None:
            self._standby.cancel()
            self._standby = None
        for task in list(self._tasks):
            task.cancel()
        if self._listener is not None:
            self._stop_listening.set()
            self._listener.join(NOTICE_WAIT_S + 5)
            self._listener = None
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self.active = False
        self._lock.release()

    def schedule(self, occ: Occurrence) -> int:
        """Make sure the jobs of its dispatch instant and its deadline exist, if it is due soon.

        Returns 1 when a dispatch job covers the occurrence now. On a stand-by: tell the active
        runner (another process) to plan it now.
        """
        dispatch_at = occ.start_at - dispatch_ahead(self._ctx.settings.scheduler)
        if occ.status == OccurrenceStatus.scheduled and dispatch_at > utcnow() + JOB_WINDOW:
            return 0  # the planner tick adds it when it comes near
        if occ.status not in (OccurrenceStatus.scheduled, OccurrenceStatus.dispatched):
            return 0
        if not self.active:
            try:
                self._lock.notify_holder(str(occ.id))
            except Exception as exc:  # the active runner's tick still plans it
                log.warning("could not tell the active runner about occurrence %s: %s", occ.id, exc)
            return 0
        self._add_instant_job(CLOSE_JOB, "close", occ.deadline_at)
        if occ.status != OccurrenceStatus.scheduled:
            return 0
        self._add_instant_job(DISPATCH_JOB, "dispatch", dispatch_at)
        return 1

    def _add_instant_job(self, func: str, kind: str, at: datetime) -> None:
        at = at.astimezone(UTC)  # one spelling per instant: its job id and its argument
        job_id = instant_job_id(kind, at)
        if job_id in self._jobs:
            return
        self._jobs.add(job_id)  # first: a job due at once may be submitted before add_job returns
        try:
            self._scheduler.add_job(
                func, trigger="date", run_date=at, args=[at.isoformat()], id=job_id, replace_existing=True,
                max_instances=INSTANT_JOB_INSTANCES,
            )  # fmt: skip
        except BaseException:
            self._jobs.discard(job_id)
            raise

    def _submitted(self, event: JobSubmissionEvent) -> None:
        """(Event loop) a job started: its instant no longer has a waiting job."""
        self._jobs.discard(event.job_id)

    def unschedule(self, occurrence_ids: Iterable[int]) -> None:
        """Drop the dispatch jobs of instants that cancelling left without airings.

        An instant another occurrence still airs at keeps its job; the batch skips cancelled ones.
        """
        occurrence_ids = list(occurrence_ids)
        if not self.active or not occurrence_ids:
            return
        with self._ctx.session_factory() as session:
            starts = planning.vacated_starts(session=session, occurrence_ids=occurrence_ids)
        ahead = dispatch_ahead(self._ctx.settings.scheduler)
        for start in starts:
            job_id = instant_job_id("dispatch", start - ahead)
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(job_id, jobstore="default")
            self._jobs.discard(job_id)
