"""bench/dbwrite.py at smoke size, so the benchmark cannot rot (the figures mean nothing at this size)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "dbwrite.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _assert_figures(out: str, baselines: list[str]) -> None:
    lines = [line.strip() for line in out.splitlines()]
    assert sum(line.startswith("report writer (apply_reports") and "rows/s" in line for line in lines) == len(
        baselines
    )
    for baseline in baselines:
        assert any(line.startswith(f"baseline, {baseline}") and "rows/s" in line for line in lines), out
    # Judged against executemany (the first baseline); COPY is printed as the ceiling, no goal.
    assert sum(line.startswith("ratio ") and "goal: ratio >= 0.200x" in line for line in lines) == 1
    assert sum(line.startswith("ratio ") and "goal: -" in line for line in lines) == len(baselines) - 1
    assert "checked: every delivery as the rules say" in out


def test_smoke_run_prints_the_writer_beside_sqlite3_executemany_and_checks_the_data():
    done = _run("--smoke")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SQLite (WAL, synchronous=NORMAL)" in done.stdout
    _assert_figures(done.stdout, ["sqlite3.executemany of the same rows"])
    assert "WRONG DATA" not in done.stdout + done.stderr


@pytest.mark.postgres
def test_smoke_run_on_postgresql_against_executemany_and_copy(pg_server):
    done = _run("--smoke", "--database-url", pg_server.url("postgres"))
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_figures(done.stdout, ["psycopg executemany of the same rows", "psycopg COPY of the same rows"])


def test_an_unreachable_database_exits_2_without_figures():
    done = _run("--smoke", "--database-url", f"postgresql+psycopg://cx@127.0.0.1:{free_port()}/cx")
    assert done.returncode == 2
    assert "cannot reach PostgreSQL" in done.stderr
    assert "rows/s" not in done.stdout and "ratio" not in done.stdout
