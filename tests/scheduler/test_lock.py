"""Exactly one scheduler runner per database: the second one stands by until the first lets go."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from sqlalchemy import text

from core.db import make_session_factory
from core.settings import Settings
from scheduler import runner as scheduler_runner
from scheduler.jobs import JobContext
from scheduler.lock import ADVISORY_LOCK_KEY, LockLost, RunnerLock
from scheduler.runner import SchedulerRunner


def test_only_one_runner_holds_the_lock(engine):
    first, second = RunnerLock(engine), RunnerLock(engine)
    assert first.acquire()
    assert not second.acquire()  # another process (or server) must stand by
    assert first.acquire()  # re-entrant for its holder
    first.release()
    assert second.acquire()
    assert not first.acquire()
    second.release()
    first.release()  # releasing what one does not hold is harmless


# The wake-ups and lock-loss detection ride on PostgreSQL's LISTEN/NOTIFY and sessions.
postgres_only = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def _holder_pids(engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid::bigint = :k AND granted"
                ),
                {"k": ADVISORY_LOCK_KEY},
            ).scalars()
        )


def _kill_holder(engine) -> int:
    """End the session that holds the runner lock, as a database restart or a broken link would."""
    (pid,) = _holder_pids(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    return pid


@postgres_only
def test_other_processes_wake_the_holder(engine):
    holder, other = RunnerLock(engine), RunnerLock(engine)
    assert holder.acquire()
    other.notify_holder("17")  # as a stand-by server does for an occurrence it planned
    other.notify_holder("18")
    heard: list[str] = []
    deadline = time.monotonic() + 5
    while len(heard) < 2 and time.monotonic() < deadline:
        heard += holder.wait_for_notices(1)
    assert heard == ["17", "18"]
    assert holder.wait_for_notices(0.1) == []
    holder.release()


@postgres_only
def test_a_holder_whose_connection_dies_knows_it_lost_the_lock(engine):
    holder, standby = RunnerLock(engine), RunnerLock(engine)
    assert holder.acquire() and not standby.acquire()
    _kill_holder(engine)
    with pytest.raises(LockLost):
        holder.wait_for_notices(5)
    assert not holder.held
    assert standby.acquire()
    assert not holder.acquire()
    standby.release()


@postgres_only
def test_a_runner_that_loses_its_lock_stands_by_and_runs_again(engine, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(scheduler_runner, "LOCK_RETRY_S", 0.2)
    rt = JobContext(
        settings=Settings(data_dir=tmp_path),
        session_factory=make_session_factory(engine),
        sender=None,  # type: ignore[arg-type]  (nothing is dispatched here)
    )

    async def scenario() -> tuple[int, int]:
        runner = SchedulerRunner(engine=engine, context=rt)
        runner.start()
        try:
            assert runner.role == "active"
            killed = await asyncio.to_thread(_kill_holder, engine)
            for _ in range(100):
                await asyncio.sleep(0.05)
                if "lost the scheduler runner lock" in caplog.text and runner.role == "active":
                    break
            assert runner.role == "active" and runner.running
            (holder,) = await asyncio.to_thread(_holder_pids, engine)
            return killed, holder
        finally:
            runner.shutdown()

    with caplog.at_level(logging.INFO, logger="scheduler.runner"):
        killed, holder = asyncio.run(scenario())
    assert "lost the scheduler runner lock" in caplog.text
    assert "took over as the scheduler runner" in caplog.text
    assert holder != killed  # a new session holds it: the runner took it again
    assert _holder_pids(engine) == []  # and let it go at shutdown
