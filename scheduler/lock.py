"""Exactly one scheduler runner: a PostgreSQL advisory lock, or a file lock beside the SQLite file.

The lock is held for the runner's lifetime on a connection (or file descriptor) of its own; when
the process dies the database (or kernel) releases it, and a stand-by runner takes over.

On PostgreSQL the holder's connection also LISTENs: any other server process of the database
wakes the runner with `notify_holder` (NOTIFY) when it plans work for the near future, so a
broadcast approved on a stand-by is planned at once rather than at the runner's next tick. The
same connection tells the holder when the lock is gone (the connection broke, e.g. the database
restarted): `wait_for_notices` raises `LockLost`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

# pg_try_advisory_lock key: "cx" and 1, any constant all cunxiang servers of one database share.
ADVISORY_LOCK_KEY = 0x6378_0001
# LISTEN/NOTIFY channel on which other processes wake the runner (payload: their text).
NOTIFY_CHANNEL = "cunxiang_scheduler"
# Server-side TCP keepalive on the lock's connection: if the runner's machine vanishes (power, network)
# PostgreSQL drops its session, and so the lock, after about idle + interval x count seconds
# (the default would be the kernel's two hours). Ignored on Unix-socket connections.
LOCK_KEEPALIVE = {"tcp_keepalives_idle": 10, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 3}


class LockLost(RuntimeError):
    """The connection that held the advisory lock failed: the lock is no longer held."""


class RunnerLock:
    """Non-blocking try-lock; `acquire` is True when this process may run the scheduler."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fd is not None

    @property
    def notifies(self) -> bool:
        """Whether other processes can wake the holder (PostgreSQL); else the runner's tick must do."""
        return self._engine.dialect.name == "postgresql"

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
                if got:
                    for name, value in LOCK_KEEPALIVE.items():
                        conn.execute(text("SELECT set_config(:n, :v, false)"), {"n": name, "v": str(value)})
                    conn.execute(text(f"LISTEN {NOTIFY_CHANNEL}"))
            except Exception:
                conn.invalidate()
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

    def wait_for_notices(self, timeout: float) -> list[str]:
        """Block up to `timeout` s for wake-ups sent to the holder; their payloads, oldest first.

        Raises LockLost when the lock's connection failed (the lock is then dropped here). Without
        notifications (SQLite) or without the lock it just waits. Call from one thread at a time.
        """
        conn = self._conn
        if conn is None:
            time.sleep(timeout)
            return []
        try:
            return [
                n.payload for n in conn.connection.dbapi_connection.notifies(timeout=timeout, stop_after=1)
            ]
        except Exception as exc:  # whatever failed, we can no longer vouch for the lock
            self._conn = None
            conn.invalidate()
            conn.close()
            raise LockLost(f"the {self.describe()} connection failed: {exc}") from exc

    def notify_holder(self, payload: str) -> None:
        """Wake the process holding the lock (which may be this one) with `payload` (PostgreSQL only)."""
        if not self.notifies:
            return
        with self._engine.connect() as conn:
            conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": payload})
            conn.commit()

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
            except Exception as exc:  # closing the connection releases it anyway
                log.warning("advisory unlock failed: %s", exc)
            finally:
                # Not back to the pool: it LISTENs and carries the keepalive settings.
                self._conn.invalidate()
                self._conn.close()
                self._conn = None
        if self._fd is not None:
            if self._fd >= 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None
