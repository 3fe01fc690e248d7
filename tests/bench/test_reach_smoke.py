"""bench/reach.py at smoke size, so the benchmark cannot rot (the figures mean nothing at this size)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.live import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "reach.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_smoke_run_prints_each_figure_beside_its_baseline_and_the_reports_agree():
    done = _run("--smoke")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "20,000 deliveries" in out
    assert "one county-wide broadcast's reach by township (668 deliveries)" in out
    assert "by township (28 areas" in out and "by village (334 areas" in out
    lines = [line.strip() for line in out.splitlines()]
    assert sum(line.startswith("baseline, ") for line in lines) == 3
    assert sum(line.startswith("ratio ") for line in lines) == 3
    assert "month by township: raw / roll-ups = " in out and "month by village: raw / roll-ups = " in out
    assert out.count("figures agree: yes") == 2
    assert "FIGURES DIFFER" not in out


def test_an_unreachable_database_exits_2_without_figures():
    done = _run("--smoke", "--database-url", f"postgresql+psycopg://cx@127.0.0.1:{free_port()}/cx")
    assert done.returncode == 2
    assert "cannot reach PostgreSQL" in done.stderr
    assert "ms" not in done.stdout and "ratio" not in done.stdout
