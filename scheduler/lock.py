"""Exactly one scheduler runner: a PostgreSQL advisory lock, or a file lock beside the SQLite file.

The lock is held for the runner's lifetime on a connection (or file descriptor) of its own; when
the process dies the database (or kernel) releases it, and a stand-by runner takes over.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

# pg_try_advisory_lock key: "cx" and 1, any constant all cunxiang servers of one database share.
ADVISORY_LOCK_KEY = 0x6378_0001


class RunnerLock:
    """Non-blocking try-lock; `acquire` is True when this process may run the scheduler."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fd is not None

    def describe(self) -> str:
        if self._engine.dialect.name == "postgresql":
            return f"PostgreSQL advisory lock {ADVISORY_LOCK_KEY}"
        path = self._lock_path()
        return f"file lock {path}" if path else "no lock (in-memory database)"

    def _lock_path(self) -> Path | None:
        database = self._engine.url.database
        if not database or database == ":memory:":
            return None
        return Path(f"{database}.scheduler-lock")

    def acquire(self) -> bool:
        """Try once; True if held now."""
        if self.held:
            return True
        if self._engine.dialect.name == "postgresql":
            # Autocommit: a session-level lock must not keep a transaction (and a snapshot) open.
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                got = bool(
                    conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY}).scalar()
                )
            except Exception:
                conn.close()
                raise
            if got:
                self._conn = conn
            else:
                conn.close()
            return got
        path = self._lock_path()
        if path is None:
            self._fd = -1  # one process owns an in-memory database anyway
            return True
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
            except Exception as exc:  # closing the connection releases it anyway
                log.warning("advisory unlock failed: %s", exc)
            finally:
                self._conn.close()
                self._conn = None
        if self._fd is not None:
            if self._fd >= 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None
