"""bench/schedule.py at smoke size, so the benchmark cannot rot (the figures mean nothing at this size).

What is checked: it runs to the end, prints each figure beside its baseline with a ratio and a
goal, and its own count held (every airing of the window published exactly once).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from tests.live import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "schedule.py"


def _run(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )
    return done, time.monotonic() - started


def test_smoke_run_prints_every_figure_beside_its_baseline():
    done, took = _run("--smoke")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    lines = [line.strip() for line in out.splitlines()]
    assert "== schedule: 200 recurring broadcasts, 10 airings spread over 4 s and a burst of 5" in out
    # the lateness goal is judged on all airings, and on the burst apart
    assert "firing lateness p99, all 15 airings (spread and burst): " in out
    assert "firing lateness p50, all 15 airings: " in out
    assert re.search(r"burst: the \d+ airings due in its second \(5 \+ \d+ spread\), lateness p99: ", out)
    assert "baseline, a bare APScheduler no-op job at each instant, same job store: " in out
    assert "baseline, the bare no-op job at that instant: " in out
    # start-up linearity: per 1,000 at the largest size against the smallest
    assert "start-up per 1,000 broadcasts at N=200 (cold): " in out
    assert "baseline, start-up per 1,000 broadcasts at N=100: " in out
    assert sum(line.startswith("baseline, ") for line in lines) == 4
    ratios = [line for line in lines if line.startswith("ratio ")]
    assert len(ratios) == 4
    goals = [r for r in ratios if "goal: figure <= 100.0 ms" in r or "goal: ratio <= 1.500x" in r]
    assert len(goals) == 3 and all(r.endswith(("ok", "MISSED")) for r in goals)
    assert "checked: 15 airings planned in the window, each published exactly once" in out
    assert "garbage collections >= 20 ms while firing: " in out
    assert "load average (1 min) " in out
    assert took < 30, f"the smoke run took {took:.1f} s"


def test_an_unreachable_broker_exits_2_without_figures():
    done, _ = _run("--smoke", "--broker", f"mqtt://127.0.0.1:{free_port()}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot reach the MQTT broker" in done.stderr
    assert "ratio" not in done.stdout and "ms" not in done.stdout
