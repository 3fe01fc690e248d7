"""Exactly one scheduler runner per database: the second one stands by until the first lets go."""

from __future__ import annotations

from scheduler.lock import RunnerLock


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
