"""Scale-out of report ingestion: `cunxiang ingest` workers on an MQTT shared subscription.

    python bench/ingest_workers.py [--speakers 5000] [--occurrences 4] [--workers 2] [--smoke]
                                   [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
                                   [--broker mqtt://host:port]

PostgreSQL (the production database: several writers at once), Mosquitto (a throwaway one with
the settings cunxiang ships, unless --broker), N lean speakers (bench/swarm.py), and real
`cunxiang ingest --shared-group bench` worker processes. Every speaker reports received, playing
and played for each of --occurrences airings at once; measured: reports stored per second from
the first publish to the last row in the database. First with one worker (the baseline), then,
for fresh airings, with --workers workers in the same group. Checked by count each time: every
report stored exactly once (rows = distinct (occurrence, device, state) = sent), every delivery
played, and the workers' own counts add up to what was sent (the broker split the stream, it did
not copy it).

On a small machine the workers are not what limits the rate: Mosquitto, PostgreSQL and the
speakers share the same cores, and a second worker finds no idle core. So, where the kernel lets
us (root, a cgroup `cpu` controller), each worker is held to --worker-cpu of one core (default
0.25) by a cgroup of its own: the workers are then the bottleneck, as they are in a deployment
that adds workers because they are, and the rate shows what one more worker adds. Without
cgroups (or with --worker-cpu 0) the workers run unheld and the figure is the machine's.

A database of its own is created on the server named by --database-url and dropped at the end;
an unreachable database or broker exits 2 without figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from common import ROOT, Result, Unavailable, print_results, run_main
from fanout import Mosquitto, SwarmProcess, broker_reachable
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
GROUP = "bench"
# The kernel's default period. (10 ms instead, closer to "a slow core", made each report cost the
# held workers 50 % more CPU and did not change the ratio.)
CFS_PERIOD_US = 100_000


class CpuCap:
    """A cgroup of its own that holds one process to a fraction of one core (cgroup v2 `cpu.max`,
    or v1 `cpu.cfs_quota_us`). OSError when the kernel does not let us (not root, no controller)."""

    def __init__(self, fraction: float) -> None:
        name = f"cx-bench-worker-{uuid.uuid4().hex[:8]}"
        quota = str(max(1000, int(fraction * CFS_PERIOD_US)))
        if Path("/sys/fs/cgroup/cgroup.controllers").exists():
            self.path = Path("/sys/fs/cgroup") / name
            self.path.mkdir()
            (self.path / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
        else:
            self.path = Path("/sys/fs/cgroup/cpu") / name
            self.path.mkdir()
            (self.path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(quota)

    def hold(self, pid: int) -> None:
        """Move the process (all its threads) into the group."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        """Delete the group (its processes have exited)."""
        try:
            self.path.rmdir()
        except OSError:
            pass


def cgroups_usable(fraction: float) -> str | None:
    """None if workers can be held to a CPU fraction here, else why not."""
    if fraction <= 0:
        return "--worker-cpu 0"
    try:
        CpuCap(fraction).remove()
    except OSError as exc:
        return f"no cgroup cpu controller we may write ({exc.strerror or exc})"
    return None


def create_database(server_url: str) -> tuple[str, Callable[[], None]]:
    """A fresh database on the server of server_url: (its URL, a function that drops it)."""
    url = make_url(server_url)
    if url.get_backend_name() != "postgresql":
        raise Unavailable("--database-url must name a PostgreSQL server (several workers write at once)")
    url = url.set(drivername="postgresql+psycopg")
    name = f"cx_bench_workers_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise Unavailable(
            f"cannot reach PostgreSQL at {url.render_as_string(hide_password=True)}: {exc}"
        ) from exc

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


def prepare(url: str, speakers: int, occurrences: int) -> list[tuple[str, str]]:
    """Schema, demo county, speakers and a pending delivery per speaker and airing."""
    from sqlalchemy import func, select

    from api import migrate
    from core import regions
    from core.db import make_engine, make_session_factory, session_scope
    from core.models import Region, RegionLevel
    from devices import service as device_service

    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            regions.load_demo(session=s)
            villages = s.scalar(select(func.count()).where(Region.level == RegionLevel.village)) or 1
            devices = device_service.ensure_simulated(session=s, per_village=math.ceil(speakers / villages))
            devices = devices[:speakers]
            for occurrence_id in range(1, occurrences + 1):
                device_service.snapshot_deliveries(session=s, occurrence_id=occurrence_id, devices=devices)
            return [(d.id, d.area_code) for d in devices]
    finally:
        engine.dispose()


def start_workers(
    count: int, url: str, broker_url: str, work: Path, cpu: float, caps: list[CpuCap]
) -> list[subprocess.Popen]:
    env = {
        **os.environ,
        "CUNXIANG_DATABASE_URL": url,
        "CUNXIANG_DATA_DIR": str(work),
        "CUNXIANG_MQTT_URL": broker_url,
    }
    workers = []
    for i in range(count):
        log = (work / f"worker-{time.monotonic_ns()}-{i}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "--log-level", "warning", "ingest", "--shared-group", GROUP,
             "--stats-interval", "0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
        if cpu > 0:
            caps.append(CpuCap(cpu))
            caps[-1].hold(proc.pid)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if "ingesting" not in first:
            proc.kill()
            raise Unavailable(f"ingest worker did not start: {first!r}; see {log.name}")
        workers.append(proc)
    return workers


def stop_workers(workers: list[subprocess.Popen]) -> list[dict]:
    counts = []
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    for proc in workers:
        out, _ = proc.communicate(timeout=60)
        last = [line for line in out.splitlines() if line.startswith("{")]
        counts.append(json.loads(last[-1]) if last else {})
    return counts


def stored(url: str, occurrences: list[int]) -> tuple[int, int, int]:
    """(report rows, distinct (occurrence, device, state), deliveries played) for these airings."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows, distinct = conn.execute(
                text(
                    "SELECT count(*), count(DISTINCT (occurrence_id, device_id, state)) FROM reports "
                    "WHERE occurrence_id = ANY(:occ)"
                ),
                {"occ": occurrences},
            ).one()
            played = conn.scalar(
                text("SELECT count(*) FROM deliveries WHERE occurrence_id = ANY(:occ) AND state = 'played'"),
                {"occ": occurrences},
            )
        return rows, distinct, played
    finally:
        engine.dispose()


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(
    workers_n: int, occurrences: list[int], n: int, url: str, broker_url: str, swarm, work: Path, cpu: float
):
    """Ingest one wave of reports with workers_n workers: (reports/s, seconds, worker counts)."""
    expected = 3 * n * len(occurrences)
    caps: list[CpuCap] = []
    try:
        workers = start_workers(workers_n, url, broker_url, work, cpu, caps)
    except BaseException:
        for cap in caps:
            cap.remove()
        raise
    time.sleep(1.0)  # every worker's subscription in place before the wave
    try:
        busy0, total0 = machine_ticks()
        cpu0 = [cpu_seconds(w.pid) for w in workers]
        started = time.time()
        swarm.send(cmd="reports", occurrences=occurrences)
        deadline = time.monotonic() + 300
        engine = create_engine(url)
        with engine.connect() as conn:
            while time.monotonic() < deadline:
                count = conn.scalar(
                    text("SELECT count(*) FROM reports WHERE occurrence_id = ANY(:occ)"), {"occ": occurrences}
                )
                conn.rollback()
                if count >= expected:
                    break
                time.sleep(0.01)
        done = time.time()
        busy1, total1 = machine_ticks()
        worker_cpu = [cpu_seconds(w.pid) - c for w, c in zip(workers, cpu0, strict=True)]
        engine.dispose()
        swarm.wait("burst", 60)
    finally:
        counts = stop_workers(workers)
        for cap in caps:
            cap.remove()
    rows, distinct, played = stored(url, occurrences)
    applied = sum(c.get("applied", 0) + c.get("stale", 0) for c in counts)
    if (rows, distinct, played, applied) != (expected, expected, n * len(occurrences), expected):
        raise RuntimeError(
            f"{workers_n} worker(s): rows {rows}, distinct {distinct}, played {played}, workers applied "
            f"{applied}; expected {expected}, {expected}, {n * len(occurrences)}, {expected}"
        )
    seconds = done - started
    usage = {"machine_busy": (busy1 - busy0) / max(1, total1 - total0), "worker_cpu": worker_cpu}
    return expected / seconds, seconds, counts, usage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--speakers", type=int, default=5000)
    parser.add_argument("--occurrences", type=int, default=4, help="airings reported per wave")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--database-url", default=DEFAULT_SERVER, help="a PostgreSQL server to create a db on"
    )
    parser.add_argument(
        "--worker-cpu", type=float, default=0.25, help="hold each worker to this fraction of a core (0: no)"
    )
    parser.add_argument("--broker", help="an MQTT broker (with $share) instead of a throwaway Mosquitto")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.speakers, args.occurrences = 30, 1
    m = args.occurrences
    unheld = cgroups_usable(args.worker_cpu)
    cpu = 0.0 if unheld else args.worker_cpu

    with tempfile.TemporaryDirectory(prefix="cx-workers-") as tmp:
        work = Path(tmp)
        url, drop = create_database(args.database_url)
        broker = None
        swarm = None
        try:
            if args.broker:
                broker_reachable(args.broker)
                broker_url = args.broker
            else:
                broker = Mosquitto(work)
                broker_url = broker.url
            print(f"preparing: {args.speakers} speakers, {2 * m} airings on PostgreSQL ...", flush=True)
            devices = prepare(url, args.speakers, 2 * m)
            swarm = SwarmProcess(broker_url, devices, work, None, net=4)
            swarm.connect(len(devices))
            n = len(devices)
            print(f"one worker: {3 * n * m} reports ...", flush=True)
            one_rate, one_s, one_counts, one_use = run_once(
                1, list(range(1, m + 1)), n, url, broker_url, swarm, work, cpu
            )
            print(f"{args.workers} workers: {3 * n * m} reports ...", flush=True)
            many_rate, many_s, many_counts, many_use = run_once(
                args.workers, list(range(m + 1, 2 * m + 1)), n, url, broker_url, swarm, work, cpu
            )
        finally:
            if swarm is not None:
                swarm.quit()
            if broker is not None:
                broker.stop()
            drop()
    held = f" (each held to {cpu:g} of a core)" if cpu else ""
    split = ", ".join(str(c.get("applied", 0) + c.get("stale", 0)) for c in many_counts)
    print_results(
        f"ingestion scale-out: {args.workers} `cunxiang ingest` workers on $share/{GROUP}/..., PostgreSQL",
        [
            Result(
                f"{args.workers} workers{held}, reports stored per second",
                many_rate,
                "reports/s",
                f"one worker{held}, same number of reports",
                one_rate,
                goal_ratio=0.8 * args.workers,
            ),
        ],  # fmt: skip
        notes=[
            f"one worker {one_s:.2f} s, {args.workers} workers {many_s:.2f} s for {3 * n * m} reports each",
            f"split between the workers: {split} (sum {3 * n * m}); each report stored once (by count)",
            f"machine: {os.cpu_count()} cores shared by Mosquitto, PostgreSQL, the speakers and the workers; "
            f"busy {one_use['machine_busy']:.0%} with one worker, {many_use['machine_busy']:.0%} with "
            f"{args.workers}",
            (
                f"each worker ran in a cgroup of its own, held to {cpu:g} of a core (cpu quota)"
                if cpu
                else f"workers not held ({unheld}): the rate is what the whole machine manages"
            ),
            "worker CPU seconds per 1,000 reports: one worker "
            f"{sum(one_use['worker_cpu']) / (3 * n * m) * 1000:.3f}, {args.workers} workers "
            + " + ".join(f"{c / (3 * n * m) * 1000:.3f}" for c in many_use["worker_cpu"]),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
