"""Reach at volume: 10,000,000 deliveries, one broadcast's reach and a month's report.

    python bench/reach.py                       # 10,000,000 deliveries on SQLite, ~3.5 minutes
    python bench/reach.py --smoke               # 20,000 deliveries, a few seconds (figures mean nothing)
    python bench/reach.py --rows 2000000 --repeat 7
    python bench/reach.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

A fresh database (a SQLite file in a temporary directory, or with --database-url a PostgreSQL
database of its own, created beside the one named and dropped at the end) gets the project's
migrations, the demo county (28 townships, 334 villages), 2 speakers per village (668), and years
of daily airings (in order, every day: county-wide programmes, one-off county-wide notices,
township and village programmes; 14 airings per speaker a day, 9,352 deliveries) until the
deliveries reach --rows. Speakers report played, failed, skipped, preempted or nothing, some more
reliably than others. Loading is bulk (sqlite3 executemany / COPY, the deliveries table's
secondary indexes built after the load; on PostgreSQL a VACUUM ANALYZE after it, as autovacuum
would); its time is printed, not judged. Every day is then rolled up by
`reports.service.ensure_rollups`, the code the reports use.

Measured, with a warm cache (one unmeasured run first), median of --repeat runs:
(a) one broadcast's reach by township: `reports.reach.broadcast_reach()` for a one-off county-wide notice
    (668 deliveries) in the middle of the data. Baseline: the same call with the database told not
    to use any index on `deliveries` (SQLite `NOT INDEXED`, PostgreSQL `enable_*scan = off`),
    i.e. what the figure would be without an index to find one airing's rows. Goal: < 10 ms.
(b) a month's report by township and by village for the county: `reports.service.period_report`
    from the daily roll-ups, against the same call computing every day from the raw deliveries
    (`rollups=False`). Goals: < 100 ms, and raw / roll-ups >= 10x. The two reports must agree in
    every figure; if they do not, the differences are printed and the exit status is 1.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Result, Unavailable, print_results, run_main  # noqa: E402  (puts the checkout on sys.path)
from sqlalchemy import Engine, create_engine, event, insert, make_url, select, text  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from api import migrate  # noqa: E402
from core import regions  # noqa: E402
from core.db import make_engine, make_session_factory, session_scope  # noqa: E402
from devices import service as device_service  # noqa: E402
from devices.models import Delivery, Device  # noqa: E402
from reports import reach as reach_stats  # noqa: E402
from reports import service as report_service  # noqa: E402
from scheduler.models import Broadcast, BroadcastStatus, Occurrence, OccurrenceStatus, Priority  # noqa: E402

ZONE = ZoneInfo("Asia/Shanghai")
COUNTY = "341225000000"
FIRST_DAY = date(2023, 1, 1)  # local; the data runs forward from here
ROWS_FULL = 10_000_000
ROWS_SMOKE = 20_000
SPEAKERS_PER_VILLAGE = 2
REPEAT = 5
GOAL_REACH_MS = 10.0
GOAL_REPORT_MS = 100.0
GOAL_SPEEDUP = 10.0  # raw / roll-ups
DELIVERY_CHUNK = 50_000  # rows per executemany / per COPY batch
CONNECT_TIMEOUT_S = 5  # PostgreSQL: an unreachable server is reported, not waited for

# A day's airings (local times). County programmes and township/village programmes recur daily;
# notices are one-off county-wide broadcasts, a new broadcast each.
COUNTY_PROGRAMMES = ["06:30", "07:00", "12:00", "12:30", "18:00", "18:30", "19:30"]
COUNTY_NOTICES = ["09:15", "14:40", "16:20"]
TOWNSHIP_PROGRAMMES = ["08:00", "17:00"]
VILLAGE_PROGRAMMES = ["07:30", "20:00"]
AUDIO_S = 180.0  # every airing is three minutes long
# (state, share of a reliable speaker's airings); a flaky speaker plays half as often.
OUTCOMES = [("played", 0.93), ("failed", 0.02), ("no_report", 0.03), ("skipped", 0.01), ("preempted", 0.01)]
FLAKY_SHARE = 0.1  # of speakers

PRIORITY = {"county": Priority.county, "township": Priority.township, "village": Priority.village}


# ------------------------------------------------------------------ data


@dataclass
class County:
    """What the generator needs to know about the county and what it made."""

    devices: list[tuple[str, str]]  # (device id, area code), ordered by id
    townships: list[str]
    villages: list[str]
    notices: list[tuple[int, date]] = field(default_factory=list)  # (occurrence id, local day)
    days: list[date] = field(default_factory=list)
    deliveries: int = 0
    occurrences: int = 0
    broadcasts: int = 0


def _local(day: date, hhmm: str) -> datetime:
    hh, mm = map(int, hhmm.split(":"))
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=ZONE).astimezone(UTC)


def _day_plan(county: County) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """One day's airings in time order: (hh:mm, key of the broadcast, target speakers)."""
    by_prefix: dict[str, list[tuple[str, str]]] = {}
    for dev in county.devices:
        by_prefix.setdefault(dev[1][:9], []).append(dev)
        by_prefix.setdefault(dev[1], []).append(dev)
    plan = [(t, f"county {t}", county.devices) for t in COUNTY_PROGRAMMES]
    plan += [(t, "notice", county.devices) for t in COUNTY_NOTICES]
    for town in county.townships:
        speakers = by_prefix.get(town[:9], [])
        if speakers:
            plan += [(t, f"township {town} {t}", speakers) for t in TOWNSHIP_PROGRAMMES]
    for village in county.villages:
        plan += [(t, f"village {village} {t}", by_prefix[village]) for t in VILLAGE_PROGRAMMES]
    # sorted() is stable: airings in the same minute keep the order above.
    return sorted(plan, key=lambda p: p[0])


def _prepare(engine: Engine) -> County:
    """Regions and speakers through the project's own code; returns the county to generate for."""
    factory = make_session_factory(engine)
    with session_scope(factory) as s:
        regions.load_demo(session=s)
        device_service.ensure_simulated(session=s, per_village=SPEAKERS_PER_VILLAGE)
    with factory() as s:
        devices = [tuple(r) for r in s.execute(select(Device.id, Device.area_code).order_by(Device.id))]
    villages = sorted({area for _, area in devices})
    townships = sorted({v[:9] + "000" for v in villages})
    return County(devices=devices, townships=townships, villages=villages)


def _datetime_text(engine: Engine) -> Callable[[datetime], Any]:
    """How the deliveries table stores a timestamp on this backend (the column type's own binding)."""
    bind = Delivery.__table__.c.received_at.type.bind_processor(engine.dialect)
    return bind if bind is not None else (lambda v: v)


def _generate(county: County, rows: int, engine: Engine) -> Iterator[tuple[str, Any]]:
    """Yield ("broadcast", row), ("occurrence", row) and ("delivery", tuple) in id order."""
    rng = random.Random(7)
    stamp = _datetime_text(engine)
    plan = _day_plan(county)
    flaky = {dev for dev, _ in county.devices if rng.random() < FLAKY_SHARE}
    thresholds: dict[str, list[tuple[float, str]]] = {}
    for dev, _ in county.devices:
        scale = 0.5 if dev in flaky else 1.0
        played = OUTCOMES[0][1] * scale
        rest = (1 - played) / (1 - OUTCOMES[0][1])
        edge, steps = 0.0, []
        for state, share in OUTCOMES:
            edge += played if state == "played" else share * rest
            steps.append((edge, state))
        thresholds[dev] = steps
    now = datetime.now(UTC)
    recurring: dict[str, int] = {}
    broadcast_id = occurrence_id = delivery_id = 0
    day = FIRST_DAY
    while delivery_id < rows:
        county.days.append(day)
        for hhmm, key, speakers in plan:
            if delivery_id >= rows:
                break
            start = _local(day, hhmm)
            if key == "notice" or key not in recurring:
                broadcast_id += 1
                scope = COUNTY if key.startswith(("county", "notice")) else key.split()[1]
                yield "broadcast", {
                    "id": broadcast_id, "title": f"bench {key} {day}", "text": "各位村民请注意。",
                    "priority": PRIORITY[regions.level_of(scope)],
                    "status": BroadcastStatus.done, "target_areas": [scope], "target_devices": [],
                    "scope_code": scope, "created_at": now,
                    "start_at": start if key == "notice" else None,
                }  # fmt: skip
                if key != "notice":
                    recurring[key] = broadcast_id
            occurrence_id += 1
            deadline = start + timedelta(seconds=60 + AUDIO_S + 120)
            yield "occurrence", {
                "id": occurrence_id, "broadcast_id": recurring.get(key, broadcast_id), "start_at": start,
                "expires_at": start + timedelta(seconds=60), "deadline_at": deadline,
                "status": OccurrenceStatus.done, "dispatched_at": start - timedelta(seconds=5),
                "finalized_at": deadline,
            }  # fmt: skip
            if key == "notice":
                county.notices.append((occurrence_id, day))
            received, playing = stamp(start + timedelta(seconds=1)), stamp(start + timedelta(seconds=2))
            played_at = stamp(start + timedelta(seconds=2 + AUDIO_S))
            cut_at = stamp(start + timedelta(seconds=40))
            closed = stamp(deadline)
            for dev, area in speakers[: rows - delivery_id]:
                delivery_id += 1
                r = rng.random()
                state = next((s for edge, s in thresholds[dev] if r < edge), "played")
                if state == "played":
                    row = (received, playing, played_at, AUDIO_S, None, played_at)
                elif state == "failed":
                    row = (received, None, cut_at, None, "download failed", cut_at)
                elif state == "preempted":
                    row = (received, playing, cut_at, 38.0, None, cut_at)
                elif state == "skipped":
                    row = (received, None, received, None, "expired", received)
                elif rng.random() < 0.3:  # no_report, though it had answered "received"
                    row = (received, None, closed, None, None, closed)
                else:
                    row = (None, None, closed, None, None, closed)
                yield "delivery", (delivery_id, occurrence_id, dev, area, state, *row)
        day += timedelta(days=1)
    county.deliveries, county.occurrences, county.broadcasts = delivery_id, occurrence_id, broadcast_id


DELIVERY_COLUMNS = (
    "id", "occurrence_id", "device_id", "area_code", "state", "received_at", "playing_at",
    "finished_at", "seconds_played", "error", "updated_at",
)  # fmt: skip


class _Loader:
    """Bulk writes: Core executemany for broadcasts/occurrences, the driver's fastest path for deliveries."""

    def __init__(self, engine: Engine) -> None:
        self.sqlite = engine.dialect.name == "sqlite"
        self.conn = engine.connect()
        self.pending: dict[str, list] = {"broadcast": [], "occurrence": [], "delivery": []}
        self.indexes: list[tuple[str, str]] = []

    def __enter__(self) -> _Loader:
        if self.sqlite:
            self.conn.exec_driver_sql("PRAGMA cache_size = -1000000")  # 1 GB, this connection only
        # Secondary indexes of deliveries are dropped and rebuilt from their own DDL after the load.
        if self.sqlite:
            found = self.conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries' "
                "AND sql IS NOT NULL"
            ).all()
        else:
            found = self.conn.exec_driver_sql(
                "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = 'deliveries' "
                "AND i.indexname NOT IN (SELECT conname FROM pg_constraint)"
            ).all()
        self.indexes = [(name, sql) for name, sql in found]
        for name, _ in self.indexes:
            self.conn.exec_driver_sql(f"DROP INDEX {name}")
        self.conn.commit()
        return self

    def add(self, kind: str, row: Any) -> None:
        batch = self.pending[kind]
        batch.append(row)
        if len(batch) >= DELIVERY_CHUNK:
            self.flush()

    def flush(self) -> None:
        # Parents first: broadcasts, then occurrences, then deliveries.
        if self.pending["broadcast"]:
            self.conn.execute(insert(Broadcast), self.pending["broadcast"])
        if self.pending["occurrence"]:
            self.conn.execute(insert(Occurrence), self.pending["occurrence"])
        deliveries = self.pending["delivery"]
        if deliveries:
            columns = ", ".join(DELIVERY_COLUMNS)
            cursor = self.conn.connection.cursor()
            if self.sqlite:
                marks = ", ".join("?" * len(DELIVERY_COLUMNS))
                cursor.executemany(f"INSERT INTO deliveries ({columns}) VALUES ({marks})", deliveries)
            else:
                with cursor.copy(f"COPY deliveries ({columns}) FROM STDIN") as copy:
                    for row in deliveries:
                        copy.write_row(row)
            cursor.close()
        for batch in self.pending.values():
            batch.clear()
        self.conn.commit()  # one transaction per batch keeps the WAL small

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.flush()
                self.conn.commit()
                for _, sql in self.indexes:
                    self.conn.exec_driver_sql(sql)
                if not self.sqlite:
                    for table in ("broadcasts", "occurrences", "deliveries"):
                        self.conn.exec_driver_sql(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT max(id) FROM {table}))"
                        )
                self.conn.commit()
                if not self.sqlite:
                    # What autovacuum would do soon after such a load, done now so that it does not
                    # run during the measurements. SQLite is left as the product leaves it (no
                    # ANALYZE: the planner's defaults).
                    self.conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                        "VACUUM (ANALYZE)"
                    )
        finally:
            self.conn.close()


def load(engine: Engine, rows: int) -> County:
    """The county, its speakers and `rows` deliveries; return what was made."""
    county = _prepare(engine)
    with _Loader(engine) as loader:
        for kind, row in _generate(county, rows, engine):
            loader.add(kind, row)
    return county


# ------------------------------------------------------------------ measuring


def _median_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of `fn` in ms after one unmeasured (cache-warming) run; and its result."""
    result = fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def _as_is(session: Session) -> None:
    """Sessions as the application has them."""


@contextmanager
def indexes_off(engine: Engine) -> Iterator[Callable[[Session], None]]:
    """Inside, a session passed to the yielded function reads `deliveries` without any index."""
    if engine.dialect.name != "sqlite":

        def off(session: Session) -> None:
            for setting in ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan"):
                session.execute(text(f"SET LOCAL {setting} = off"))  # until the session's transaction ends

        yield off
        return

    def no_index(conn, cursor, statement, parameters, context, executemany):
        return statement.replace("FROM deliveries", "FROM deliveries NOT INDEXED"), parameters

    event.listen(engine, "before_cursor_execute", no_index, retval=True)
    try:
        yield _as_is
    finally:
        event.remove(engine, "before_cursor_execute", no_index)


def _plan(engine: Engine, call: Callable[[], Any]) -> str:
    """How the database runs the first statement on deliveries that `call` makes (for the notes)."""
    seen: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM deliveries" in statement and not seen:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    statement, parameters = seen[0]
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            return "; ".join(row[-1] for row in plan)
        plan = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        return " / ".join(row[0].strip() for row in plan)


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two reports differ, as 'path: a != b' lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} entries != {len(b)} entries"]
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            label = x.get("code") or x.get("day") if isinstance(x, dict) else None
            out += _differences(x, y, f"{path}[{label or i}]")
        return out
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _month_of(county: County) -> date:
    """A whole month in the middle of the data (or the first month when there is less)."""
    middle = county.days[len(county.days) // 2]
    first = middle.replace(day=1)
    return first if first >= county.days[0] else county.days[0]


@contextmanager
def _database(url: str | None, work: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file in `work`, or a new PostgreSQL database beside `url`."""
    if url is None:
        yield f"sqlite:///{work / 'reach.db'}"
        return
    server = make_url(url).set(drivername="postgresql+psycopg")
    name = f"cx_bench_reach_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except OperationalError as exc:
        admin.dispose()
        raise Unavailable(f"cannot reach PostgreSQL at {server.render_as_string()}: {exc.orig}") from exc
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help=f"{ROWS_SMOKE:,} deliveries, 2 repetitions")
    parser.add_argument("--rows", type=int, help=f"deliveries to load (default {ROWS_FULL:,})")
    parser.add_argument("--repeat", type=int, help=f"measured runs per figure (default {REPEAT})")
    parser.add_argument(
        "--database-url", help="PostgreSQL URL (a database is created beside it); default SQLite"
    )
    args = parser.parse_args(argv)
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error(f"--database-url must be a postgresql:// URL, got {args.database_url!r}")
    logging.basicConfig(level=logging.WARNING)
    rows = args.rows or (ROWS_SMOKE if args.smoke else ROWS_FULL)
    repeat = args.repeat or (2 if args.smoke else REPEAT)

    with (
        tempfile.TemporaryDirectory(prefix="cx-bench-reach-") as work,
        _database(args.database_url, Path(work)) as url,
    ):
        engine = make_engine(url)
        try:
            return _run(engine, url, rows, repeat)
        finally:
            engine.dispose()


def _run(engine: Engine, url: str, rows: int, repeat: int) -> int:
    backend = engine.dialect.name
    print(f"reach benchmark on {backend}: loading {rows:,} deliveries ...", flush=True)
    started = time.perf_counter()
    migrate.upgrade(url)
    county = load(engine, rows)
    load_s = time.perf_counter() - started
    print(
        f"  loaded in {load_s:.1f} s: {len(county.devices)} speakers in {len(county.villages)} villages, "
        f"{county.broadcasts:,} broadcasts, {county.occurrences:,} occurrences over "
        f"{len(county.days):,} days ({county.days[0]} .. {county.days[-1]}), "
        f"{county.deliveries:,} deliveries",
        flush=True,
    )

    factory = make_session_factory(engine)
    month = _month_of(county)
    period = report_service.period_of(kind="month", day=month)
    # Every day of the data, and of the month measured, so nothing is written while measuring.
    days = sorted(set(county.days) | set(period.days))
    started = time.perf_counter()
    with session_scope(factory) as s:
        made = report_service.ensure_rollups(session=s, days=days, zone=ZONE)
    rollup_s = time.perf_counter() - started
    print(f"  rolled up {len(made):,} days in {rollup_s:.1f} s (reports.service.ensure_rollups)", flush=True)

    notice = next((o for o, d in county.notices if d >= month + timedelta(days=14)), county.notices[-1][0])
    failures: list[str] = []
    results: list[Result] = []
    notes: list[str] = []

    # (a) one broadcast's reach by township; a new session per call, as per request.
    def one_broadcast(setup: Callable[[Session], None] = _as_is) -> dict:
        with factory() as s:
            setup(s)
            return reach_stats.broadcast_reach(session=s, occurrence_ids=[notice], level="township")

    reach_ms, fast = _median_ms(one_broadcast, repeat)
    with indexes_off(engine) as setup:
        scan_ms, scanned = _median_ms(lambda: one_broadcast(setup), repeat)
    if fast != scanned:
        failures += ["one broadcast's reach, with and without index:", *_differences(fast, scanned)]
    results.append(
        Result(
            what=f"one county-wide broadcast's reach by township ({fast['targeted']} deliveries), "
            "reports.reach.broadcast_reach()",
            figure=reach_ms, unit="ms",
            baseline_what="the same call, no index on deliveries (table scan)", baseline=scan_ms,
            higher_is_better=False, goal_figure=GOAL_REACH_MS,
        )
    )  # fmt: skip
    notes.append(f"broadcast_reach() plan: {_plan(engine, one_broadcast)}")

    # (b) a month's report by township and by village, roll-ups against raw deliveries
    for level in ("township", "village"):

        def report(rollups: bool, level: str = level) -> dict:
            with factory() as s:
                return report_service.period_report(
                    session=s, area_code=COUNTY, period=period, zone=ZONE, level=level, rollups=rollups
                )

        rolled_ms, rolled = _median_ms(partial(report, True), repeat)
        raw_ms, raw = _median_ms(partial(report, False), repeat)
        if len(rolled["rolled_up_days"]) != len(period.days) or raw["rolled_up_days"]:
            failures.append(
                f"month by {level}: {len(rolled['rolled_up_days'])} of {len(period.days)} days rolled up, "
                f"{len(raw['rolled_up_days'])} in the raw report"
            )
        diff = _differences(
            {k: v for k, v in rolled.items() if k != "rolled_up_days"},
            {k: v for k, v in raw.items() if k != "rolled_up_days"},
        )
        if diff:
            failures += [f"month by {level}, roll-ups != raw deliveries:", *diff]
        results.append(
            Result(
                what=f"month {period.first:%Y-%m} by {level} ({len(rolled['by_area'])} areas, "
                f"{rolled['targeted']:,} deliveries), period_report from roll-ups",
                figure=rolled_ms, unit="ms",
                baseline_what="the same report from the raw deliveries (rollups=False)", baseline=raw_ms,
                higher_is_better=False, goal_figure=GOAL_REPORT_MS, goal_ratio=1 / GOAL_SPEEDUP,
            )
        )  # fmt: skip
        notes.append(
            f"month by {level}: raw / roll-ups = {raw_ms / rolled_ms:.1f}x (goal >= {GOAL_SPEEDUP:.0f}x); "
            f"figures agree: {'yes' if not diff else 'NO'}"
        )

    print_results(
        f"reach at volume, {backend}, {county.deliveries:,} deliveries, median of {repeat} warm runs",
        results,
        notes=[
            f"load {load_s:.1f} s (not judged), roll-up of {len(made):,} days {rollup_s:.1f} s",
            *notes,
        ],
    )
    if failures:
        print("\nFIGURES DIFFER:", *failures, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
