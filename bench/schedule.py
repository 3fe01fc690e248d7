"""Schedule benchmark: N active recurring broadcasts across the demo county.

    python bench/schedule.py                   # N = 1,000 / 5,000 / 10,000, about 4 minutes
    python bench/schedule.py --sizes 10000 --fire-seconds 60
    python bench/schedule.py --broker mqtt://127.0.0.1:1883   # publish to a real broker

For each N, on a fresh SQLite database (WAL) with the demo county (334 villages) and 2 speakers
per village, N broadcasts are stored as approved, each "daily at one time" for one village:
most at random times of the day, `--fire` of them spread over a window of `--fire-seconds`
starting shortly after start-up, and `--burst` more all at one second (the 07:00 slot).

Measured:
- start-up: `SchedulerRunner.start()` on a cold database (expanding every rule over the planning
  horizon, bulk-inserting the occurrences, adding APScheduler jobs for the next window), then again
  after a restart (nothing new to expand, jobs already in the store);
- firing lateness: the moment the play command is handed to the link minus the planned dispatch
  time (start_at - lead time), for every airing in the window, p50/p99/max, spread and burst apart.

The link records publish times in process (or wraps a real MQTT link with --broker): the number is
the scheduler's own lateness, not the broker's delivery time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, select  # noqa: E402

from api import migrate  # noqa: E402
from core import regions  # noqa: E402
from core.db import make_engine, make_session_factory, session_scope  # noqa: E402
from core.models import Region, RegionLevel  # noqa: E402
from core.settings import Settings  # noqa: E402
from devices import commands as device_commands  # noqa: E402
from devices import keys as device_keys  # noqa: E402
from devices import service as device_service  # noqa: E402
from scheduler import runtime  # noqa: E402
from scheduler.models import Broadcast, BroadcastStatus, Occurrence, Priority  # noqa: E402
from scheduler.runner import SchedulerRunner  # noqa: E402
from tts import service as tts_service  # noqa: E402

ZONE = ZoneInfo("Asia/Shanghai")
LEAD_S = 5.0
# Seconds between start-up and the first airing of the window (start-up itself must fit in it).
WINDOW_DELAY_S = 25.0


class RecordingLink:
    """A Link that notes when each play command was handed over (optionally passing it on)."""

    def __init__(self, inner=None) -> None:
        self.inner = inner
        self.published: dict[int, float] = {}

    @property
    def connected(self) -> bool:
        return True

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        now = time.time()
        if self.inner is not None:
            self.inner.publish(topic, payload, qos=qos, retain=retain)
        message = json.loads(payload)
        if message.get("type") == "play":
            self.published.setdefault(message["occurrence_id"], now)

    def subscribe(self, *args, **kwargs) -> None:
        if self.inner is not None:
            self.inner.subscribe(*args, **kwargs)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _prepare(url: str, settings: Settings, n: int, fire: int, burst: int, fire_seconds: float) -> datetime:
    """Demo county, speakers, one asset, and N approved daily broadcasts; return the window start."""
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with session_scope(factory) as s:
        regions.load_demo(session=s)
        device_service.ensure_simulated(session=s, per_village=2)
        villages = list(s.scalars(select(Region.code).where(Region.level == RegionLevel.village)).all())
    with factory() as s:
        asset = tts_service.synthesize_sync(session=s, settings=settings, text="各位村民请注意。").asset
    rng = random.Random(4)
    window = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=WINDOW_DELAY_S + LEAD_S)
    today = window.astimezone(ZONE).date()
    rows = []
    for i in range(n):
        if i < fire:
            at = window + timedelta(seconds=1 + i * (fire_seconds - 2) / max(fire - 1, 1))
        elif i < fire + burst:
            at = window + timedelta(seconds=round(fire_seconds / 2))
        else:
            at = window + timedelta(seconds=rng.uniform(fire_seconds + 60, 24 * 3600 - 60))
        local = at.astimezone(ZONE)
        village = villages[i % len(villages)]
        rows.append(
            {
                "title": f"bench {i}", "text": "各位村民请注意。", "priority": Priority.village,
                "status": BroadcastStatus.scheduled, "target_areas": [village], "target_devices": [],
                "scope_code": village, "asset_id": asset.id, "created_at": datetime.now(UTC),
                "recurrence": {
                    "freq": "daily", "times": [local.strftime("%H:%M:%S")],
                    "start_date": (today - timedelta(days=1)).isoformat(), "end_date": None, "interval": 1,
                    "weekdays": [], "month_days": [], "except_dates": [], "timezone": "Asia/Shanghai",
                },
            }
        )  # fmt: skip
    with session_scope(factory) as s:
        s.execute(insert(Broadcast), rows)
    engine.dispose()
    return window


async def _start(engine, settings, factory, link) -> tuple[SchedulerRunner, float]:
    runner = SchedulerRunner(
        engine=engine, rt=runtime.Runtime(settings=settings, session_factory=factory, link=link)
    )
    started = time.perf_counter()
    runner.start()
    return runner, time.perf_counter() - started


async def _run_one(n: int, args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"cx-bench-{n}-"))
    url = f"sqlite:///{work / 'bench.db'}"
    settings = Settings(
        data_dir=work,
        database={"url": url},
        tts={"engine": "espeak", "fallback": []},
        scheduler={"lead_time_s": LEAD_S, "quiet_start": "00:00", "quiet_end": "00:00"},
    )
    window = await asyncio.to_thread(_prepare, url, settings, n, args.fire, args.burst, args.fire_seconds)
    # Commands are signed as in the server (the key is made in the throwaway data dir).
    device_commands.install_signer(device_keys.load_or_create(work).signer())
    engine = make_engine(url)
    factory = make_session_factory(engine)

    inner = None
    if args.broker:
        from devices.transport import MqttLink

        inner = MqttLink(args.broker, client_id=f"cx-bench-{n}")
        await asyncio.to_thread(inner.connect)
    link = RecordingLink(inner)

    runner, cold = await _start(engine, settings, factory, link)
    jobs_cold = runner.job_count()
    runner.shutdown()
    runner, warm = await _start(engine, settings, factory, link)
    with factory() as s:
        occurrences = s.query(Occurrence).count()
    if datetime.now(UTC) > window - timedelta(seconds=LEAD_S):
        print(f"  warning: start-up for N={n} ran into the firing window; lateness includes it")

    end = window + timedelta(seconds=args.fire_seconds + 3)
    await asyncio.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))
    runner.shutdown()
    link.close()

    with factory() as s:
        planned = dict(
            s.execute(
                select(Occurrence.id, Occurrence.start_at).where(
                    Occurrence.start_at >= window,
                    Occurrence.start_at < window + timedelta(seconds=args.fire_seconds),
                )
            ).all()
        )
    engine.dispose()
    burst_at = window + timedelta(seconds=round(args.fire_seconds / 2))
    spread, burst, missing = [], [], 0
    for occ_id, start in planned.items():
        sent = link.published.get(occ_id)
        if sent is None:
            missing += 1
            continue
        late_ms = (sent - (start.timestamp() - LEAD_S)) * 1000
        (burst if start == burst_at else spread).append(late_ms)
    return {
        "n": n,
        "cold_s": cold,
        "warm_s": warm,
        "occurrences": occurrences,
        "jobs": jobs_cold,
        "spread": spread,
        "burst": burst,
        "missing": missing,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,5000,10000", help="comma-separated numbers of broadcasts")
    parser.add_argument("--fire", type=int, default=200, help="airings spread over the firing window")
    parser.add_argument("--burst", type=int, default=50, help="airings all at one second in the window")
    parser.add_argument("--fire-seconds", type=float, default=40.0, help="length of the firing window")
    parser.add_argument("--broker", help="mqtt://host:port: also publish to this broker")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.fire, args.burst, args.fire_seconds = "100", 10, 5, 5.0
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(x) for x in args.sizes.split(",")]
    results = []
    for n in sizes:
        print(f"N={n}: preparing, starting, firing for {args.fire_seconds:.0f} s ...", flush=True)
        results.append(asyncio.run(_run_one(n, args)))

    print()
    print(
        "broadcasts | start cold (s) | per 1k (s) | start warm (s) | occurrences | jobs | "
        f"lateness spread p50/p99/max (ms) | burst of {args.burst} p50/p99/max (ms) | not sent"
    )
    nan = float("nan")
    for r in results:
        s, b = r["spread"], r["burst"]
        per_k = r["cold_s"] / r["n"] * 1000
        print(
            f"{r['n']:>10} | {r['cold_s']:>14.2f} | {per_k:>10.3f} | {r['warm_s']:>14.2f} | "
            f"{r['occurrences']:>11} | {r['jobs']:>4} | "
            f"{_percentile(s, 0.5):>7.1f} / {_percentile(s, 0.99):>6.1f} / {max(s, default=nan):>6.1f}"
            f"        | {_percentile(b, 0.5):>7.1f} / {_percentile(b, 0.99):>6.1f} / "
            f"{max(b, default=nan):>6.1f}      | {r['missing']}"
        )
    worst = max((_percentile(r["spread"], 0.99) for r in results), default=float("nan"))
    print(
        f"\ngoal: p99 lateness < 100 ms (spread firing): "
        f"{'met' if worst < 100 else 'NOT met'} ({worst:.1f} ms)"
    )
    if len(results) > 1:
        per_k = [r["cold_s"] / r["n"] * 1000 for r in results]
        print(
            f"start-up per 1,000 broadcasts: {', '.join(f'{x:.3f}' for x in per_k)} s (linear if about equal)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
