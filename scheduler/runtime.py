"""What scheduled jobs need at run time, set once by the process that runs the scheduler.

APScheduler persists jobs as a text reference plus ids, so a job cannot carry live objects;
it finds the database and the speaker link here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from devices.transport import Link


@dataclass
class Runtime:
    settings: Settings
    session_factory: sessionmaker[Session]
    link: Link


_current: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    """Make `runtime` the one jobs use (None to clear)."""
    global _current
    _current = runtime


def current() -> Runtime:
    """The installed runtime; raises when the scheduler runs without one."""
    if _current is None:
        raise RuntimeError("scheduler runtime not installed: start jobs through SchedulerRunner")
    return _current
