"""The load benchmarks (fan-out, ingest workers, speech) and the runner at smoke size, so they cannot
rot. Smoke figures mean nothing; what is checked is that every figure is measured, printed beside
its baseline with a ratio, and that the counts each benchmark checks held."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_db import PgServer
from tests.live import free_port

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _blocks(out: str) -> int:
    lines = [line.strip() for line in out.splitlines()]
    baselines = sum(line.startswith("baseline, ") for line in lines)
    ratios = sum(line.startswith("ratio ") and "goal:" in line for line in lines)
    assert baselines == ratios, out
    return ratios


@pytest.mark.mosquitto
def test_fanout_smoke_measures_lag_rate_memory_and_connections():
    done = _run("fanout.py", "--smoke")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert _blocks(out) == 4
    assert "played reports stored after the end of playback" in out
    assert "report ingestion rate" in out and "server resident memory" in out
    assert "80 speakers connected and subscribed" in out
    # the benchmark's own count check: nothing lost, nothing counted twice
    assert "checked: targeted 40, played 40, 120 report rows, 120 distinct (device, state)" in out


def test_fanout_with_an_unreachable_broker_exits_2_without_figures():
    done = _run("fanout.py", "--smoke", "--broker", f"mqtt://127.0.0.1:{free_port()}")
    assert done.returncode == 2
    assert "cannot reach the MQTT broker" in done.stderr
    assert "ratio" not in done.stdout


@pytest.mark.postgres
@pytest.mark.mosquitto
def test_ingest_workers_split_a_shared_subscription_without_loss(pg_server: PgServer):
    done = _run("ingest_workers.py", "--smoke", "--database-url", pg_server.url("postgres"))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert _blocks(out) == 1
    # 30 speakers x 3 reports, split by the broker between the two workers, each stored once
    split = next(line for line in out.splitlines() if "split between the workers" in line)
    a, b = (int(x) for x in split.split(": ")[1].split(" (")[0].split(", "))
    assert a + b == 90 and a > 0 and b > 0


def test_ingest_workers_with_an_unreachable_database_exits_2():
    done = _run(
        "ingest_workers.py", "--smoke", "--database-url", f"postgresql://cx@127.0.0.1:{free_port()}/x"
    )
    assert done.returncode == 2
    assert "cannot reach PostgreSQL" in done.stderr


def test_runner_runs_the_speech_benchmark_and_summarises_its_goals():
    done = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--smoke", "speech"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.split("===== summary", 1)[1]
    assert summary.count("speech") == 2  # both of its goals, each judged ok or MISSED
    assert "pipeline, cold" in summary and "cache hit" in summary
