"""Database fixtures: every test gets a fresh database, on SQLite and on a throwaway PostgreSQL.

Fixtures
- ``database_url``: an EMPTY database, parametrized ``sqlite`` (a file in tmp_path) and
  ``postgresql`` (a new database on the session's throwaway server, dropped afterwards;
  those test ids carry the ``postgres`` marker: ``-m "not postgres"`` skips them).
- ``engine``: an Engine on ``database_url`` with the Alembic migrations applied.
- ``session_factory`` / ``session``: sessions on that engine (the session is closed after).
- ``sqlite_url``: an empty SQLite database, not parametrized.
- ``pg_server``: the session's PostgreSQL server (host, port, superuser), started on first use.

How the PostgreSQL server is started
- pg_ctl is found from ``--postgresql-exec`` / ``postgresql_exec`` (pytest-postgresql's option),
  else ``pg_config --bindir``, else the newest ``/usr/lib/postgresql/*/bin``, else PATH. The
  server on 5432, if any, is never used: ours listens on a free port, sockets in its own dir.
- It is run by pytest-postgresql's ``PostgreSQLExecutor`` (initdb with trust auth, ``pg_ctl
  start -w``, ``pg_ctl stop -m fast``) and per-test databases by its ``DatabaseJanitor``.
  Its ``postgresql_proc`` factory is not used: it puts the data directory under pytest's
  basetemp, which is mode 0700 and owned by root when the suite runs as root, while initdb,
  pg_ctl and postgres refuse to run as root.
- So, as root, the data directory goes in its own ``/tmp/cunxiang-pg-*`` directory owned by
  the ``postgres`` user (``nobody`` if there is none), and pg_ctl is called through a tiny
  wrapper that drops to that user (setgid/setuid, then exec) before running pg_ctl. As any
  other user pg_ctl is called directly. Either way the directory is removed at the end.
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import port_for
import pytest
from pytest_postgresql.executors import PostgreSQLExecutor
from pytest_postgresql.janitor import DatabaseJanitor
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.migrate import upgrade
from core.db import make_engine, make_session_factory

PG_SUPERUSER = "postgres"  # database superuser created by initdb (not the OS user)
PG_HOST = "127.0.0.1"
PG_START_TIMEOUT_S = 60  # initdb + start on a slow CI machine
UNPRIVILEGED_USERS = ("postgres", "nobody")  # OS user that runs the server when we are root

_WRAPPER = """#!{python}
# Runs pg_ctl as {user}: PostgreSQL refuses to run as root.
import os, sys
os.setgroups([])
os.setgid({gid})
os.setuid({uid})
os.environ["HOME"] = os.environ["PWD"] = {home!r}
os.chdir({home!r})
os.execv({pg_ctl!r}, [{pg_ctl!r}, *sys.argv[1:]])
"""


@dataclass(frozen=True)
class PgServer:
    """A running throwaway PostgreSQL server."""

    host: str
    port: int
    user: str
    executor: PostgreSQLExecutor

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def janitor(self, dbname: str) -> DatabaseJanitor:
        return DatabaseJanitor(user=self.user, host=self.host, port=self.port, dbname=dbname)


def find_pg_ctl(configured: str | None = None) -> str:
    """Locate pg_ctl: configured path, pg_config's bindir, the newest versioned dir, then PATH."""
    candidates: list[str] = []
    if configured:
        candidates.append(configured)
    try:
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
        candidates.append(os.path.join(bindir, "pg_ctl"))
    except (OSError, subprocess.SubprocessError):
        pass

    def version(path: str) -> int:
        part = Path(path).parts[-3]
        return int(part) if part.isdigit() else 0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=version, reverse=True)
    candidates.append(shutil.which("pg_ctl") or "")
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    tried = ", ".join(c for c in candidates if c)
    raise RuntimeError(
        f"pg_ctl not found (tried {tried}); install the PostgreSQL server package "
        "(Debian: apt-get install postgresql)"
    )


def _run_as_user() -> pwd.struct_passwd | None:
    """The unprivileged OS user to run PostgreSQL as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(f"running as root and none of the users {UNPRIVILEGED_USERS} exists to run PostgreSQL")


def _configured_pg_ctl(config: pytest.Config) -> str | None:
    try:
        return config.getoption("postgresql_exec") or config.getini("postgresql_exec") or None
    except ValueError:  # pytest-postgresql's options are not registered
        return None


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PgServer]:
    """A PostgreSQL server of our own on a free port, for the whole test session."""
    pg_ctl = find_pg_ctl(_configured_pg_ctl(request.config))
    runner = _run_as_user()
    root = Path(tempfile.mkdtemp(prefix="cunxiang-pg-"))
    executable = pg_ctl
    if runner is not None:
        os.chown(root, runner.pw_uid, runner.pw_gid)
        wrapper = root / "pg_ctl-as-user"
        wrapper.write_text(
            _WRAPPER.format(
                python=sys.executable,
                user=runner.pw_name,
                uid=runner.pw_uid,
                gid=runner.pw_gid,
                home=str(root),
                pg_ctl=pg_ctl,
            )
        )
        wrapper.chmod(0o700)
        executable = str(wrapper)
    port = port_for.select_random()
    executor = PostgreSQLExecutor(
        executable=executable,
        host=PG_HOST,
        port=port,
        datadir=str(root / "data"),
        unixsocketdir=str(root),
        logfile=str(root / "postgresql.log"),
        startparams=f"-w -t {PG_START_TIMEOUT_S}",
        dbname="cunxiang",
        user=PG_SUPERUSER,
        timeout=PG_START_TIMEOUT_S,
        # Throwaway data: no need to wait for the disk.
        postgres_options="-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
    )
    started = time.monotonic()
    try:
        executor.start()
    except Exception:
        log = root / "postgresql.log"
        if log.exists():
            sys.stderr.write(f"--- {log} ---\n{log.read_text(errors='replace')}\n")
        shutil.rmtree(root, ignore_errors=True)
        raise
    message = (
        f"PostgreSQL ({shlex.quote(pg_ctl)}, as {runner.pw_name if runner else 'current user'}) "
        f"started on port {port} in {time.monotonic() - started:.2f}s"
    )
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:  # once per run, past output capture
        with capture.global_and_fixture_disabled():
            reporter.write(f"\n{message}\n")
    try:
        yield PgServer(host=PG_HOST, port=port, user=PG_SUPERUSER, executor=executor)
    finally:
        try:
            executor.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of an empty SQLite database file in tmp_path."""
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    dbname = f"cx_test_{uuid.uuid4().hex[:16]}"
    janitor = server.janitor(dbname)
    janitor.init()
    try:
        yield server.url(dbname)
    finally:
        janitor.drop()  # terminates leftover connections first


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh database with every migration applied."""
    upgrade(database_url)
    eng = make_engine(database_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    """The session factory the application uses, bound to the test engine."""
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session on the test database; anything uncommitted is rolled back at the end."""
    with session_factory() as sess:
        yield sess
