"""Schedule benchmark: N active recurring broadcasts across the demo county.

    python bench/schedule.py                  # start-up at N = 1,000 / 5,000 / 10,000, firing at 10,000
    python bench/schedule.py --sizes 1000,10000 --fire-seconds 60
    python bench/schedule.py --broker mqtt://127.0.0.1:1883   # also publish to a real broker
    python bench/schedule.py --smoke          # tiny sizes for the test suite; figures mean nothing

For each N: a fresh SQLite database (WAL) with the demo county (334 villages), 2 speakers per
village, and N broadcasts stored as approved, each "daily at one time" for one village. Of them,
`--fire` are due spread over a window of `--fire-seconds` a little after start-up, `--burst` all
in the same second in the middle of it (a county's 07:00 slot), and the rest at random times of
the day. About 2 minutes at the default sizes.

1. Start-up: `SchedulerRunner.start()` on the cold database (every rule expanded over the planning
   horizon, occurrences bulk-inserted, jobs added for the next 10 minutes) at each N, and again
   warm (a restart: nothing new to expand). Figure: cold start-up per 1,000 broadcasts at the
   largest N; baseline: the same at the smallest N. Linear growth keeps the ratio near 1 (below
   it when a fixed cost weighs on small N). Goal: ratio <= 1.5.
2. Firing lateness, at the largest N, with the runner started warm and left running: the moment
   each airing's play command is handed to the link minus its planned dispatch time
   (start_at - lead), p50 and p99 over ALL airings of the window (spread and burst together),
   and the burst alone. Goal: p99 < 100 ms. Baseline: afterwards, alone, a bare APScheduler
   (AsyncIOScheduler, SQLAlchemyJobStore in the same database file, the runner's job defaults)
   runs a no-op coroutine at each distinct instant of the same pattern (one job per instant, as
   the runner has): the lateness the scheduler itself imposes, which no dispatch can beat. Each
   airing is compared with the bare job of its instant.

The link records publish times in process (and passes each message to a real broker with
--broker): the figure is the scheduler's lateness, not the broker's delivery time. Checked by
count: every airing of the window published exactly once, none missing; otherwise exit 1 and no
figures. An unreachable --broker exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # noqa: E402
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # noqa: E402
from common import Result, Unavailable, print_results, run_main  # noqa: E402  (puts the checkout on sys.path)
from sqlalchemy import insert, select  # noqa: E402

from api import migrate  # noqa: E402
from core import regions  # noqa: E402
from core.db import make_engine, make_session_factory, session_scope  # noqa: E402
from core.models import Region, RegionLevel  # noqa: E402
from core.settings import Settings  # noqa: E402
from devices import keys as device_keys  # noqa: E402
from devices import service as device_service  # noqa: E402
from devices.commands import CommandSender  # noqa: E402
from devices.transport import LinkError, MqttLink  # noqa: E402
from scheduler.jobs import JobContext  # noqa: E402
from scheduler.models import Broadcast, BroadcastStatus, Occurrence, Priority  # noqa: E402
from scheduler.runner import JOB_DEFAULTS, SchedulerRunner  # noqa: E402
from tts.models import AudioAsset  # noqa: E402

ZONE = ZoneInfo("Asia/Shanghai")
LEAD_S = 5.0
GOAL_LATENESS_MS = 100.0
GOAL_LINEARITY = 1.5
# The bare baseline scheduler's jobs live beside the runner's, in a table of their own.
BARE_TABLE = "bench_bare_jobs"
# Seconds from the bare scheduler's start to the first instant of its window (its jobs are added first).
BARE_DELAY_S = 1.0
# After the last planned instant, how long a missing airing (or bare job) is waited for.
SETTLE_S = 5.0
# Garbage collections at least this long while firing are listed beside the figures.
GC_PAUSE_MS = 20.0


class RecordingLink:
    """A Link that notes when each play command was handed over (optionally passing it on)."""

    def __init__(self, inner: MqttLink | None = None) -> None:
        self.inner = inner
        self.published: dict[int, float] = {}  # occurrence id -> first publish, epoch seconds
        self.plays: dict[int, int] = {}  # occurrence id -> play commands published

    @property
    def connected(self) -> bool:
        return True

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        now = time.time()
        if self.inner is not None:
            self.inner.publish(topic, payload, qos=qos, retain=retain)
        message = json.loads(payload)
        if message.get("type") == "play":
            occurrence = message["occurrence_id"]
            self.published.setdefault(occurrence, now)
            self.plays[occurrence] = self.plays.get(occurrence, 0) + 1

    def subscribe(self, *args, **kwargs) -> None:
        if self.inner is not None:
            self.inner.subscribe(*args, **kwargs)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


# Fire times of the bare baseline's jobs (instant ISO -> epoch seconds).
_bare_fired_at: dict[str, float] = {}


async def bare_job(at: str) -> None:
    """The baseline's job: note when it ran, nothing else."""
    _bare_fired_at.setdefault(at, time.time())


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _spell(what: str, values: list[float]) -> str:
    top = max(values, default=float("nan"))
    return f"{what} {_percentile(values, 0.5):.1f} / {_percentile(values, 0.99):.1f} / {top:.1f}"


@dataclass
class Pattern:
    """When the window's airings are dispatched, as offsets (s) from the window's start."""

    spread: list[float]
    burst: float

    @classmethod
    def make(cls, fire: int, fire_seconds: float) -> Pattern:
        span = max(fire_seconds - 2, 0.0)
        return cls(
            spread=[1 + i * span / max(fire - 1, 1) for i in range(fire)],
            burst=float(round(fire_seconds / 2)),
        )


def _template(work: Path) -> tuple[Path, int, list[str]]:
    """A migrated database with the demo county, 2 speakers per village and one audio asset."""
    path = work / "template.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with session_scope(factory) as s:
        regions.load_demo(session=s)
        device_service.ensure_simulated(session=s, per_village=2)
        villages = list(s.scalars(select(Region.code).where(Region.level == RegionLevel.village)).all())
        # The scheduler needs the audio's length and hash, not the file: speakers are not simulated.
        asset = AudioAsset(
            cache_key="bench-schedule", sha256="0" * 64, size_bytes=24_000, duration_ms=3_000,
            engine="espeak", voice="cmn", text="各位村民请注意。",
        )  # fmt: skip
        s.add(asset)
        s.flush()
        asset_id = asset.id
    engine.dispose()
    return path, asset_id, villages


def _broadcasts(
    url: str, n: int, asset_id: int, villages: list[str], pattern: Pattern, window: datetime, burst: int
) -> None:
    """N approved daily broadcasts: the spread ones, the burst, the rest at random times of the day."""
    rng = random.Random(4)
    today = window.astimezone(ZONE).date()
    window_len = max(pattern.spread + [pattern.burst])
    rows = []
    for i in range(n):
        if i < len(pattern.spread):
            dispatch = window + timedelta(seconds=pattern.spread[i])
        elif i < len(pattern.spread) + burst:
            dispatch = window + timedelta(seconds=pattern.burst)
        else:  # anywhere else in the day, clear of the window
            dispatch = window + timedelta(seconds=rng.uniform(window_len + 120, 24 * 3600 - 120))
        local = (dispatch + timedelta(seconds=LEAD_S)).astimezone(ZONE)
        village = villages[i % len(villages)]
        rows.append(
            {
                "title": f"bench {i}", "text": "各位村民请注意。", "priority": Priority.village,
                "status": BroadcastStatus.scheduled, "target_areas": [village], "target_devices": [],
                "scope_code": village, "asset_id": asset_id, "created_at": datetime.now(UTC),
                "recurrence": {
                    "freq": "daily", "times": [local.strftime("%H:%M:%S")],
                    "start_date": (today - timedelta(days=1)).isoformat(), "end_date": None, "interval": 1,
                    "weekdays": [], "month_days": [], "except_dates": [], "timezone": "Asia/Shanghai",
                },
            }
        )  # fmt: skip
    engine = make_engine(url)
    with session_scope(make_session_factory(engine)) as s:
        s.execute(insert(Broadcast), rows)
    engine.dispose()


@dataclass
class SizeRun:
    n: int
    cold_s: float
    warm_s: float
    occurrences: int
    jobs: int
    # Only at the firing size:
    lateness: dict[int, float] | None = None  # occurrence id -> ms
    burst_ids: frozenset[int] = frozenset()
    bare: dict[int, float] | None = None  # occurrence id -> the bare job's lateness at its instant, ms
    planned: int = 0
    missing: int = 0
    twice: int = 0
    pauses: list[tuple[float, float]] = field(default_factory=list)  # (s into the window, ms) of GC


class GcPauses:
    """Garbage collections of at least GC_PAUSE_MS while installed: they stop every thread alike."""

    def __init__(self, origin: datetime) -> None:
        self.origin = origin.timestamp()
        self.pauses: list[tuple[float, float]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.time()
        elif (took := (time.time() - self._started) * 1000) >= GC_PAUSE_MS:
            self.pauses.append((self._started - self.origin, took))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


async def _start(engine, settings: Settings, factory, sender) -> tuple[SchedulerRunner, float]:
    runner = SchedulerRunner(
        engine=engine, context=JobContext(settings=settings, session_factory=factory, sender=sender)
    )
    started = time.perf_counter()
    runner.start()
    return runner, time.perf_counter() - started


async def _wait_until(deadline: datetime, done) -> None:
    """Poll `done()` until it holds or the deadline passes."""
    while True:
        if done() or datetime.now(UTC) >= deadline:
            return
        await asyncio.sleep(0.1)


async def _stop(runner: SchedulerRunner) -> None:
    runner.shutdown()
    await asyncio.sleep(0.1)  # APScheduler shuts down on the loop: let it, before the database goes


async def _run_size(
    n: int, fire: bool, args: argparse.Namespace, template: tuple[Path, int, list[str]]
) -> SizeRun:
    path, asset_id, villages = template
    work = Path(tempfile.mkdtemp(prefix=f"cx-bench-schedule-{n}-"))
    try:
        return await _measure(n, fire, args, work, path, asset_id, villages)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _measure(
    n: int,
    fire: bool,
    args: argparse.Namespace,
    work: Path,
    template: Path,
    asset_id: int,
    villages: list[str],
) -> SizeRun:
    db = work / "bench.db"
    shutil.copyfile(template, db)
    url = f"sqlite:///{db}"
    settings = Settings(
        data_dir=work,
        database={"url": url},
        # Pinned, not the defaults: dispatch at start - lead (no prefetch), no quiet hours.
        scheduler={"lead_time_s": LEAD_S, "prefetch_s": 0, "quiet_start": "00:00", "quiet_end": "00:00"},
    )
    pattern = Pattern.make(args.fire, args.fire_seconds)
    window = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=args.delay)
    await asyncio.to_thread(_broadcasts, url, n, asset_id, villages, pattern, window, args.burst)
    # Commands are signed as in the server (the key is made in the throwaway data dir).
    signer = device_keys.load_or_create(work).signer()
    engine = make_engine(url)
    factory = make_session_factory(engine)
    inner = None
    if args.broker:
        inner = MqttLink(args.broker, client_id=f"cx-bench-schedule-{n}-{os.getpid()}")
        try:
            await asyncio.to_thread(inner.connect)
        except LinkError as exc:
            raise Unavailable(f"cannot reach the MQTT broker {args.broker}: {exc}") from exc
    link = RecordingLink(inner)
    sender = CommandSender(link=link, signer=signer)
    try:
        runner, cold = await _start(engine, settings, factory, sender)
        jobs = runner.job_count()
        await _stop(runner)
        runner, warm = await _start(engine, settings, factory, sender)
        with factory() as s:
            occurrences = s.query(Occurrence).count()
        run = SizeRun(n=n, cold_s=cold, warm_s=warm, occurrences=occurrences, jobs=jobs)
        if not fire:
            await _stop(runner)
            return run
        if datetime.now(UTC) > window:
            print(
                f"  warning: start-up for N={n} ran into the firing window; lateness includes it", flush=True
            )
        with factory() as s:
            planned = dict(
                s.execute(
                    select(Occurrence.id, Occurrence.start_at).where(
                        Occurrence.start_at >= window,
                        Occurrence.start_at < window + timedelta(seconds=args.fire_seconds + LEAD_S),
                    )
                ).all()
            )
        last = window + timedelta(seconds=max(pattern.spread + [pattern.burst]))
        with GcPauses(window) as pauses:
            await _wait_until(last + timedelta(seconds=SETTLE_S), lambda: set(planned) <= set(link.published))
            await asyncio.sleep(0.5)  # a second play command of any airing would show up meanwhile
        run.pauses = pauses.pauses
        await _stop(runner)
    finally:
        link.close()
        engine.dispose()

    burst_at = window + timedelta(seconds=pattern.burst + LEAD_S)
    run.planned = len(planned)
    run.lateness = {}
    offsets: dict[int, float] = {}
    for occ_id, start in planned.items():
        dispatch_at = start - timedelta(seconds=LEAD_S)
        offsets[occ_id] = (dispatch_at - window).total_seconds()
        sent = link.published.get(occ_id)
        if sent is None:
            run.missing += 1
            continue
        run.twice += link.plays[occ_id] > 1
        run.lateness[occ_id] = (sent - dispatch_at.timestamp()) * 1000
    run.burst_ids = frozenset(o for o, start in planned.items() if start == burst_at)
    run.bare = await _bare_baseline(url, offsets)
    return run


async def _bare_baseline(url: str, offsets: dict[int, float]) -> dict[int, float]:
    """No-op jobs, one per distinct instant of the same pattern; each airing gets its instant's lateness."""
    engine = make_engine(url)
    scheduler = AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=BARE_TABLE)},
        job_defaults=JOB_DEFAULTS,
        timezone="Asia/Shanghai",
    )
    scheduler.start()
    _bare_fired_at.clear()
    begin = datetime.now(UTC) + timedelta(seconds=BARE_DELAY_S)
    instants = {offset: begin + timedelta(seconds=offset) for offset in sorted(set(offsets.values()))}
    for at in instants.values():
        scheduler.add_job(
            f"{__name__}:bare_job",
            trigger="date",
            run_date=at,
            args=[at.isoformat()],
            id=f"bare@{at.isoformat()}",
        )
    if datetime.now(UTC) > begin:
        print("  warning: adding the bare jobs ran into their window", flush=True)
    await _wait_until(
        max(instants.values()) + timedelta(seconds=SETTLE_S), lambda: len(_bare_fired_at) == len(instants)
    )
    scheduler.shutdown(wait=False)
    await asyncio.sleep(0.1)
    engine.dispose()
    late = {
        offset: (_bare_fired_at[at.isoformat()] - at.timestamp()) * 1000
        for offset, at in instants.items()
        if at.isoformat() in _bare_fired_at
    }
    if len(late) != len(instants):
        raise RuntimeError(f"only {len(late)} of {len(instants)} bare jobs ran")
    return {occ_id: late[offset] for occ_id, offset in offsets.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        default="1000,5000,10000",
        help="comma-separated numbers of broadcasts; firing at the largest",
    )
    parser.add_argument("--fire", type=int, default=200, help="airings spread over the firing window")
    parser.add_argument("--burst", type=int, default=50, help="airings due in the same second, mid-window")
    parser.add_argument("--fire-seconds", type=float, default=40.0, help="length of the firing window")
    parser.add_argument(
        "--delay", type=float, default=25.0,
        help="seconds from preparing the largest N to its first dispatch (start-up happens in between; "
        "the planner's 60 s tick then falls inside the window)",
    )  # fmt: skip
    parser.add_argument("--broker", help="mqtt://host:port: also publish to this broker")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.fire, args.burst, args.fire_seconds, args.delay = "100,200", 10, 5, 4.0, 2.0
    logging.basicConfig(level=logging.WARNING)
    sizes = sorted(int(x) for x in args.sizes.split(","))
    if args.fire + args.burst > sizes[0]:
        parser.error(f"--fire + --burst ({args.fire + args.burst}) must not exceed the smallest size")
    load_before = os.getloadavg()

    work = Path(tempfile.mkdtemp(prefix="cx-bench-schedule-"))
    try:
        template = _template(work)
        runs: list[SizeRun] = []
        for n in sizes:
            fire = n == sizes[-1]
            print(
                f"N={n:,}: preparing, starting cold and warm"
                + (f", firing for {args.fire_seconds:g} s, then the bare baseline ..." if fire else " ..."),
                flush=True,
            )
            runs.append(asyncio.run(_run_size(n, fire, args, template)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    big, small = runs[-1], runs[0]
    assert big.lateness is not None and big.bare is not None
    if big.missing or big.twice or big.planned != args.fire + args.burst:
        print(
            f"check failed: {big.planned} airings planned in the window (expected {args.fire + args.burst}), "
            f"{big.missing} never published, {big.twice} published more than once",
            file=sys.stderr,
        )
        return 1
    every = list(big.lateness.values())
    burst = [big.lateness[o] for o in big.burst_ids]
    bare_every = list(big.bare.values())
    bare_burst = [big.bare[o] for o in big.burst_ids]
    per_k = [r.cold_s / r.n * 1000 for r in runs]
    table = [f"{'broadcasts':>10} | {'start cold (s)':>14} | {'per 1k (s)':>10} | {'start warm (s)':>14} | "
             f"{'occurrences':>11} | {'jobs':>4}"]  # fmt: skip
    for r, k in zip(runs, per_k, strict=True):
        table.append(
            f"{r.n:>10,} | {r.cold_s:>14.2f} | {k:>10.3f} | {r.warm_s:>14.2f} | "
            f"{r.occurrences:>11,} | {r.jobs:>4}"
        )
    spread = [v for o, v in big.lateness.items() if o not in big.burst_ids]
    n_all = len(every)
    burst_what = (
        f"burst: the {len(burst)} airings due in its second ({args.burst} + {len(burst) - args.burst} spread)"
    )
    print_results(
        f"schedule: {big.n:,} recurring broadcasts, {args.fire} airings spread over {args.fire_seconds:g} s "
        f"and a burst of {args.burst} due in the same second",
        [
            Result(f"firing lateness p99, all {n_all} airings (spread and burst)", _percentile(every, 0.99),
                   "ms", "a bare APScheduler no-op job at each instant, same job store",
                   _percentile(bare_every, 0.99), higher_is_better=False, goal_figure=GOAL_LATENESS_MS),
            Result(f"firing lateness p50, all {n_all} airings", _percentile(every, 0.5), "ms",
                   "the bare no-op job", _percentile(bare_every, 0.5), higher_is_better=False),
            Result(f"{burst_what}, lateness p99", _percentile(burst, 0.99),
                   "ms", "the bare no-op job at that instant", _percentile(bare_burst, 0.99),
                   higher_is_better=False, goal_figure=GOAL_LATENESS_MS),
            Result(f"start-up per 1,000 broadcasts at N={big.n:,} (cold)", per_k[-1], "s",
                   f"start-up per 1,000 broadcasts at N={small.n:,}", per_k[0],
                   higher_is_better=False, goal_ratio=GOAL_LINEARITY),
        ],
        notes=[
            *table,
            f"lateness (ms) p50 / p99 / max: {_spell('all', every)}; {_spell('spread', spread)}; "
            f"{_spell('burst', burst)}; {_spell('bare job', bare_every)}",
            f"checked: {big.planned} airings planned in the window, each published exactly once",
            "garbage collections >= {:g} ms while firing: {}".format(
                GC_PAUSE_MS, ", ".join(f"{ms:.0f} ms at {at:+.1f} s" for at, ms in big.pauses) or "none"
            ),
            f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after, "
            f"on {os.cpu_count()} cores",
        ],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
