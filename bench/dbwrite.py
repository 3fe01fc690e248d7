"""Database writes: the report writer against plain executemany of the same rows, same run.

    python bench/dbwrite.py                     # SQLite (WAL), 5,000 speakers, 100,000 reports
    python bench/dbwrite.py --rows 300000
    python bench/dbwrite.py --database-url postgresql://postgres@127.0.0.1:5432/test
    python bench/dbwrite.py --smoke             # tiny, for the test suite; figures mean nothing

A fresh database gets the schema (the Alembic migrations), the demo county, `--speakers`
speakers and one pending delivery per speaker for each of a few occurrences. Every delivery
then reports `received`, `playing` and `played` (1 % `failed` without playing, 1 % a `received`
sent again by QoS 1 after `playing`, which must count as stale), in arrival order, cut into
batches of `devices.ingest.BATCH_MAX` as the ingestor cuts them. On SQLite the database is a
file with the project's own engine settings (core.db.make_engine: WAL, synchronous=NORMAL).

Measured, batch by batch and interleaved so both sides see the same machine:
- the report writer: `devices.report_writer.apply_reports` inside `session_scope`, one transaction
  per batch, exactly as `ReportIngestor._write` calls it (raw rows stored, deliveries advanced);
- the baseline: plain DB-API executemany of the same report rows into a table of the same shape
  (same columns and index), one transaction per batch: `sqlite3` on SQLite; psycopg executemany
  and psycopg COPY on PostgreSQL. Its rows are tuples ready in the database's own format before
  its clock starts (the writer's clock covers everything it does with the report objects).
  The goal (>= 0.2x) is judged against executemany; COPY is printed beside it as the ceiling of
  a bare bulk load, without a goal.

Afterwards every delivery is compared with what the rules say it must be (state, received_at,
playing_at, finished_at, seconds_played, error), and the writer's applied/stale counts and the
raw row count with the reports sent: a writer that stores wrong data fails the benchmark
(exit 1, no figures); a missed goal is printed as MISSED and still exits 0, as bench/run.py
expects. On PostgreSQL a database of its own is created next to the one in the URL (and ANALYZEd
after loading, as autovacuum would) and dropped at the end; an unreachable database exits 2.
"""

from __future__ import annotations

import argparse
import math
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import Result, Unavailable, print_results, run_main
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from api import migrate
from core import regions
from core.db import make_engine, make_session_factory, session_scope
from core.models import Region, RegionLevel
from cunxiang_shared import protocol
from devices import report_writer
from devices import service as device_service
from devices.ingest import BATCH_MAX
from devices.models import FINAL_STATES, STATE_RANK, Delivery, DeliveryState
from devices.models import Report as ReportRow

GOAL_RATIO = 0.2
DURATION_S = 180.0  # the programme's length: every `played` report says this many seconds
AIRING_GAP_S = 900.0  # occurrences air this far apart, so their report waves do not overlap
FAILED_SHARE = 0.01  # deliveries that fail after `received` (no `playing`)
RESENT_SHARE = 0.01  # deliveries whose `received` arrives a second time after `playing` (QoS 1)
ERROR_TEXT = "sha256 mismatch after download"
COLUMNS = ("device_id", "occurrence_id", "state", "reported_at", "received_at", "seconds_played", "error")

Batch = list[tuple[protocol.Report, datetime]]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="report rows to write")
    parser.add_argument("--speakers", type=int, default=5_000, help="speakers (deliveries per occurrence)")
    parser.add_argument("--batch", type=int, default=BATCH_MAX, help="reports per transaction")
    parser.add_argument(
        "--database-url", help="PostgreSQL URL (a database is created beside it); default SQLite"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.speakers, args.batch = 1_200, 100, 500
    if args.rows < 1 or args.speakers < 1 or args.batch < 1:
        parser.error("--rows, --speakers and --batch must be positive")
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error(f"--database-url must be a postgresql:// URL, got {args.database_url!r}")
    return args


# ---------------------------------------------------------------- databases


@contextmanager
def _database(url: str | None, work: Path) -> Iterator[str]:
    """The URL of a fresh, empty database: a SQLite file, or a new PostgreSQL database beside `url`."""
    if url is None:
        yield f"sqlite:///{work / 'writer.db'}"
        return
    try:
        import psycopg
    except ImportError as exc:
        raise Unavailable("psycopg is not installed") from exc

    admin = _libpq(url)
    name = f"cx_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise Unavailable(f"cannot reach PostgreSQL at {make_url(url).render_as_string()}: {exc}") from exc
    try:
        yield (
            make_url(url)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _libpq(url: str) -> str:
    """A SQLAlchemy-style PostgreSQL URL as a libpq URL psycopg accepts."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _prepare(url: str, speakers: int, occurrences: int) -> list[str]:
    """Schema, demo county, speakers and their pending deliveries; return the speakers' ids."""
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    try:
        with session_scope(factory) as s:
            regions.load_demo(session=s)
            villages = s.scalar(select(func.count()).where(Region.level == RegionLevel.village)) or 1
            devices = device_service.ensure_simulated(session=s, per_village=math.ceil(speakers / villages))
            devices = devices[:speakers]
            for occurrence_id in range(1, occurrences + 1):
                device_service.snapshot_deliveries(session=s, occurrence_id=occurrence_id, devices=devices)
            device_ids = [d.id for d in devices]
        if engine.dialect.name == "postgresql":
            # Planner statistics, as autovacuum keeps them on a live server.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")
        return device_ids
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the reports


def _reports(device_ids: Sequence[str], occurrences: int, rows: int, rng: random.Random) -> Batch:
    """Every speaker's reports for every occurrence, in arrival order, cut to `rows`."""
    base = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)
    timed: list[tuple[datetime, protocol.Report]] = []

    def add(device_id: str, occurrence_id: int, state: str, at: datetime, **kw) -> None:
        report = protocol.Report(device_id=device_id, occurrence_id=occurrence_id, state=state, at=at, **kw)
        timed.append((at + timedelta(seconds=rng.uniform(0.01, 0.2)), report))

    for occurrence_id in range(1, occurrences + 1):
        start = base + timedelta(seconds=occurrence_id * AIRING_GAP_S)
        for device_id in device_ids:
            received = start - timedelta(seconds=rng.uniform(10, 300))  # audio fetched after the command
            add(device_id, occurrence_id, "received", received)
            if rng.random() < FAILED_SHARE:
                add(device_id, occurrence_id, "failed", start, error=ERROR_TEXT)
                continue
            playing = start + timedelta(seconds=rng.uniform(0, 0.3))
            add(device_id, occurrence_id, "playing", playing)
            if rng.random() < RESENT_SHARE:
                timed.append((playing + timedelta(seconds=rng.uniform(1, 60)), timed[-2][1]))
            add(
                device_id,
                occurrence_id,
                "played",
                playing + timedelta(seconds=DURATION_S),
                seconds_played=DURATION_S,
            )
    timed.sort(key=lambda pair: pair[0])
    return [(report, arrived) for arrived, report in timed[:rows]]


@dataclass
class Expected:
    """What the rules say the deliveries must look like after the reports, and the writer's counts."""

    deliveries: dict[tuple[int, str], tuple]
    applied: int
    stale: int


def _expected(reports: Batch) -> Expected:
    """Apply the delivery rules to the reports, in order, in plain Python (no no_report here)."""
    rows: dict[tuple[int, str], list] = {}
    applied = stale = 0
    for report, _arrived in reports:
        # state, received_at, playing_at, finished_at, seconds_played, error
        row = rows.setdefault(
            (report.occurrence_id, report.device_id), ["pending", None, None, None, None, None]
        )
        new = DeliveryState(report.state)
        if STATE_RANK[new] <= STATE_RANK[DeliveryState(row[0])]:
            stale += 1
            continue
        applied += 1
        if new == DeliveryState.received or row[1] is None:
            row[1] = report.at
        if new == DeliveryState.playing:
            row[2] = report.at
        if new in FINAL_STATES:
            row[3], row[4], row[5] = report.at, report.seconds_played, report.error
        row[0] = new.value
    return Expected(deliveries={key: tuple(row) for key, row in rows.items()}, applied=applied, stale=stale)


def _check(url: str, expected: Expected, counts: Counter[str], rows: int) -> list[str]:
    """Differences between the database (and the writer's counts) and the expected outcome."""
    problems = []
    if (counts["applied"], counts["stale"]) != (expected.applied, expected.stale):
        problems.append(
            f"writer counted applied={counts['applied']} stale={counts['stale']}, "
            f"expected {expected.applied} and {expected.stale}"
        )
    for key in ("unknown_device", "unknown_delivery"):
        if counts[key]:
            problems.append(f"writer counted {key}={counts[key]}, expected 0")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(ReportRow)) or 0
            by_state = Counter(
                dict(conn.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all())
            )
            found = conn.execute(
                select(
                    Delivery.occurrence_id,
                    Delivery.device_id,
                    Delivery.state,
                    Delivery.received_at,
                    Delivery.playing_at,
                    Delivery.finished_at,
                    Delivery.seconds_played,
                    Delivery.error,
                )
            ).all()
    finally:
        engine.dispose()
    if stored != rows:
        problems.append(f"{stored} raw report rows stored, {rows} distinct reports sent")
    blank = ("pending", None, None, None, None, None)
    want_states = Counter(expected.deliveries.get((r[0], r[1]), blank)[0] for r in found)
    if {str(k): v for k, v in by_state.items()} != dict(want_states):
        problems.append(f"deliveries by state {dict(by_state)}, expected {dict(want_states)}")
    wrong = [
        (r[0], r[1]) for r in found if (str(r[2]), *r[3:]) != expected.deliveries.get((r[0], r[1]), blank)
    ]
    if wrong:
        problems.append(f"{len(wrong)} deliveries differ from the rules, e.g. {wrong[:3]}")
    return problems


# ---------------------------------------------------------------- the baselines


def _utc_naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


class SqliteBaseline:
    """sqlite3.executemany into a table shaped like `reports`, in a database file of its own."""

    what = "sqlite3.executemany of the same rows"

    def __init__(self, writer_url: str, work: Path) -> None:
        with sqlite3.connect(writer_url.split("///", 1)[1]) as source:
            ddl = [sql for (sql,) in source.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'reports' AND sql IS NOT NULL"
            )]  # fmt: skip
        self.conn = sqlite3.connect(work / "baseline.db", isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):  # as core.db.make_engine sets them
            self.conn.execute(f"PRAGMA {pragma}")
        for sql in ddl:
            self.conn.execute(sql)
        # Resent reports are stored once (the unique key of `reports`), as the report writer does.
        self.sql = (
            f"INSERT INTO reports ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
            " ON CONFLICT DO NOTHING"
        )

    def prepare(self, batch: Batch) -> list[tuple]:
        return [
            (
                r.device_id,
                r.occurrence_id,
                r.state,
                _utc_naive(r.at).isoformat(" ", "microseconds"),  # SQLAlchemy's SQLite format
                _utc_naive(arrived).isoformat(" ", "microseconds"),
                r.seconds_played,
                r.error,
            )
            for r, arrived in batch
        ]

    def write(self, rows: list[tuple]) -> None:
        self.conn.execute("BEGIN")
        self.conn.executemany(self.sql, rows)
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def _pg_rows(batch: Batch) -> list[tuple]:
    return [
        (
            r.device_id,
            r.occurrence_id,
            r.state,
            _utc_naive(r.at),
            _utc_naive(arrived),
            r.seconds_played,
            r.error,
        )
        for r, arrived in batch
    ]


class PgExecutemanyBaseline:
    """psycopg executemany into a table shaped like `reports` (LIKE ... INCLUDING ALL)."""

    what = "psycopg executemany of the same rows"
    table = "baseline_executemany"

    def __init__(self, writer_url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(_libpq(writer_url))
        self.conn.execute(f"CREATE TABLE {self.table} (LIKE reports INCLUDING ALL)")
        self.conn.commit()

    def prepare(self, batch: Batch) -> list[tuple]:
        return _pg_rows(batch)

    def write(self, rows: list[tuple]) -> None:
        placeholders = ", ".join(["%s"] * len(COLUMNS))
        with self.conn.cursor() as cur:
            columns = ", ".join(COLUMNS)
            cur.executemany(
                f"INSERT INTO {self.table} ({columns}) VALUES ({placeholders}) ON CONFLICT DO NOTHING", rows
            )
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


class PgCopyBaseline(PgExecutemanyBaseline):
    """psycopg COPY FROM STDIN into a table shaped like `reports`."""

    what = "psycopg COPY of the same rows"
    table = "baseline_copy"

    def __init__(self, writer_url: str) -> None:
        import psycopg

        # COPY cannot skip a resent report: the same columns indexed, but not unique.
        self.conn = psycopg.connect(_libpq(writer_url))
        self.conn.execute(f"CREATE TABLE {self.table} (LIKE reports INCLUDING ALL EXCLUDING INDEXES)")
        self.conn.execute(f"CREATE INDEX ON {self.table} (occurrence_id, device_id, state, reported_at)")
        self.conn.commit()

    def write(self, rows: list[tuple]) -> None:
        with (
            self.conn.cursor() as cur,
            cur.copy(f"COPY {self.table} ({', '.join(COLUMNS)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        self.conn.commit()


# ---------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    rng = random.Random(7)
    occurrences = math.ceil(args.rows / (3 * args.speakers))
    with (
        tempfile.TemporaryDirectory(prefix="cx-bench-dbwrite-") as tmp,
        _database(args.database_url, Path(tmp)) as url,
    ):
        work = Path(tmp)
        device_ids = _prepare(url, args.speakers, occurrences)
        reports = _reports(device_ids, occurrences, args.rows, rng)
        expected = _expected(reports)
        batches = [reports[i : i + args.batch] for i in range(0, len(reports), args.batch)]

        postgres = url.startswith("postgresql")
        baselines = (
            [PgExecutemanyBaseline(url), PgCopyBaseline(url)] if postgres else [SqliteBaseline(url, work)]
        )
        engine = make_engine(url)
        factory = make_session_factory(engine)
        writer_s = 0.0
        baseline_s = [0.0] * len(baselines)
        counts: Counter[str] = Counter()
        try:
            for batch in batches:
                # Interleaved batch by batch: both sides see the same machine at the same moment.
                for i, baseline in enumerate(baselines):
                    rows = baseline.prepare(batch)  # the baseline's rows are ready before its clock starts
                    started = time.perf_counter()
                    baseline.write(rows)
                    baseline_s[i] += time.perf_counter() - started
                started = time.perf_counter()
                with session_scope(factory) as session:
                    result = report_writer.apply_reports(session=session, reports=batch)
                writer_s += time.perf_counter() - started
                counts.update(
                    applied=result.applied,
                    stale=result.stale,
                    unknown_device=result.unknown_device,
                    unknown_delivery=result.unknown_delivery,
                )
        finally:
            engine.dispose()
            for baseline in baselines:
                baseline.close()

        # A resent report (same occurrence, device, state and time) is stored once.
        distinct = len({(r.occurrence_id, r.device_id, r.state, r.at) for r, _ in reports})
        problems = _check(url, expected, counts, distinct)
        if problems:
            for problem in problems:
                print(f"dbwrite: WRONG DATA: {problem}", file=sys.stderr)
            return 1

    backend = "PostgreSQL" if postgres else "SQLite (WAL, synchronous=NORMAL)"
    writer_rate = len(reports) / writer_s
    results = [
        Result(
            what="report writer (apply_reports in session_scope, one transaction per batch)",
            figure=writer_rate,
            unit="rows/s",
            baseline_what=f"{baseline.what}, one transaction per batch",
            baseline=len(reports) / seconds,
            # The goal is set against executemany (the baseline: the driver's own batch
            # insert of the same rows). COPY on PostgreSQL is printed as the ceiling of a bare
            # bulk load, which a writer that also moves each delivery cannot approach; no goal.
            goal_ratio=GOAL_RATIO if i == 0 else None,
        )
        for i, (baseline, seconds) in enumerate(zip(baselines, baseline_s, strict=True))
    ]
    states = Counter(row[0] for row in expected.deliveries.values())
    by_state = ", ".join(f"{state} {n:,}" for state, n in sorted(states.items()))
    print_results(
        f"dbwrite: {len(reports):,} reports from {args.speakers:,} speakers x {occurrences} occurrences, "
        f"{backend}, batches of {args.batch:,}",
        results,
        notes=[
            f"{len(batches)} batches; writer {writer_s:.2f} s"
            + "".join(f", {b.what} {s:.2f} s" for b, s in zip(baselines, baseline_s, strict=True)),
            f"checked: every delivery as the rules say ({by_state}), "
            f"applied {counts['applied']:,}, stale {counts['stale']:,}, {len(reports):,} raw rows",
            *(["smoke size: the figures mean nothing"] if args.smoke else []),
        ],
    )
    return 0  # a missed goal is a result (printed), not a failure of the run


if __name__ == "__main__":
    raise SystemExit(run_main(main))
