"""The report writer: playback reports stored and applied to their deliveries, a batch at a time.

`apply_reports` is what the ingestor (devices.ingest) calls once per batch inside its own
transaction. Each report is one raw row (table `reports`), kept when its device was sent that
occurrence, and one guarded step of that delivery: a delivery only moves forward
(docs/reach.md). SQLite and PostgreSQL each get their own statements (`_RowByRow`, `_Arrays`),
compiled once per dialect.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    DateTime,
    Dialect,
    Executable,
    Float,
    Integer,
    String,
    TableValuedAlias,
    Text,
    Update,
    and_,
    bindparam,
    case,
    cast,
    column,
    extract,
    func,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from core.clock import utcnow
from cunxiang_shared import protocol
from devices.models import STATE_RANK, Delivery, DeliverySettlement, DeliveryState, Device
from devices.models import Report as ReportRow

log = logging.getLogger(__name__)

# A final report for a delivery that became `no_report` at the deadline still counts, however late
# it arrives within this window after the deadline, when the speaker reached that state by the
# deadline on the server's clock (its own time `at` plus its measured clock offset): an airing it
# played from its local programme while the link was down (断网续播), reported when the link came
# back. After the window an occurrence's figures are settled for good (docs/reach.md).
LATE_REPORT_WINDOW_S = 7 * 24 * 3600.0
# Refusals of one kind (out-of-order reports) are logged at WARNING at most this often; each one
# is counted (ApplyResult, the ingestor's counts).
REFUSAL_LOG_INTERVAL_S = 60.0
# seconds_played is clamped to the audio's duration (Delivery.duration_s); a figure more than this
# over it is also flagged (Delivery.seconds_reported keeps it): a speaker's measured wall-clock time
# includes start latency, but 35.3 s for 27.1 s of audio is a frozen player, not latency.
SECONDS_SLACK_S = 1.0
# The final states a later `played` report with seconds_played > 0 replaces (docs/reach.md).
SUPERSEDED_BY_PLAYED = (DeliveryState.failed, DeliveryState.skipped, DeliveryState.preempted)


def upsert(session: Session) -> Callable:
    """INSERT ... ON CONFLICT of this session's database."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


@dataclass
class ApplyResult:
    """What a batch of reports did."""

    applied: int = 0
    unknown_device: int = 0
    unknown_delivery: int = 0
    stale: int = 0  # reports that would move a delivery backwards or after its final state
    out_of_order: int = 0  # reports that would move it forward but are dated before an earlier step
    duplicate: int = 0  # reports for a delivery already stored raw (resends): not stored again
    unknown_devices: set[str] = field(default_factory=set)
    # occurrence id -> its no_report deliveries that final reports changed after the deadline job
    revised: dict[int, int] = field(default_factory=dict)


def apply_reports(*, session: Session, reports: Sequence[tuple[protocol.Report, datetime]]) -> ApplyResult:
    """Store a batch of (report, arrival time) and move each delivery forward; never backwards."""
    result = ApplyResult()
    if not reports:
        return result
    session.flush()  # the statements below bypass the ORM: let them see what the session holds
    conn = session.connection()
    writer = _report_writer(conn.dialect)
    stamp = writer.stamp
    now = stamp(utcnow())
    rows: list[tuple] = []  # in _FIELDS order
    for report, arrived in reports:
        rank = _RANK[report.state]
        final = rank == FINAL_RANK
        rows.append(
            (
                report.occurrence_id,
                report.device_id,
                report.state,
                rank,
                stamp(report.at),
                stamp(arrived),
                report.seconds_played,
                report.error,
                report.seconds_played if final else None,
                report.error if final else None,
                now,
            )
        )
    stored, result.applied, revised = writer.write(conn, rows)
    if stored < len(reports):  # reports without a delivery, or resends already stored
        _count_unknown(session=session, reports=reports, result=result)
    delivered = len(reports) - result.unknown_device - result.unknown_delivery
    result.duplicate = delivered - stored
    if delivered > result.applied:
        result.out_of_order = _count_out_of_order(conn, rows)
        if result.out_of_order:
            _log_refusal("out_of_order", result.out_of_order)
    result.stale = delivered - result.applied - result.out_of_order
    if revised:
        _record_revisions(session, revised)
        result.revised = dict(sorted(revised.items()))
    _expire_deliveries(session)
    return result


def _count_out_of_order(conn: Connection, rows: list[tuple]) -> int:
    """Of a written batch, the reports that did not apply although they would still move their
    delivery forward: the date rule refused them (a delivery's report stopped by the date rule and
    then overtaken by a later one of the same batch counts as stale)."""
    t = _DELIVERIES
    states = {
        (occ, dev): state
        for occ, dev, state in conn.execute(
            select(t.c.occurrence_id, t.c.device_id, t.c.state).where(
                t.c.occurrence_id.in_({row[0] for row in rows}), t.c.device_id.in_({row[1] for row in rows})
            )
        )
    }
    superseded = {s.value for s in SUPERSEDED_BY_PLAYED}
    count = 0
    for row in rows:
        state = states.get(row[:2])
        if state is None or state == DeliveryState.no_report.value:
            continue  # no delivery, or one the late-report window decides
        rank, final_seconds = row[_RANK_AT], row[_FINAL_SECONDS_AT]
        if rank > _RANK[state] or (
            state in superseded and row[_STATE_AT] == DeliveryState.played.value and (final_seconds or 0) > 0
        ):
            count += 1
    return count


_last_logged: dict[str, float] = {}


def _log_refusal(kind: str, count: int) -> None:
    """A WARNING for this kind of refused report, at most once per REFUSAL_LOG_INTERVAL_S."""
    now = time.monotonic()
    if now - _last_logged.get(kind, -REFUSAL_LOG_INTERVAL_S) >= REFUSAL_LOG_INTERVAL_S:
        _last_logged[kind] = now
        log.warning("refused %d %s report(s) (further ones counted, logged at most every %.0f s)",
                    count, kind, REFUSAL_LOG_INTERVAL_S)  # fmt: skip


def _record_revisions(session: Session, revised: Mapping[int, int]) -> None:
    """Note which occurrences changed after their deadline, how much, and when (DeliverySettlement)."""
    at = utcnow()  # after the change, so a roll-up that began before it is seen to be older
    # The settlement row exists (finalize_deliveries wrote it) but for deliveries settled before
    # migration 0007: then this one starts the record.
    statement = upsert(session)(DeliverySettlement).values(
        [
            {"occurrence_id": occ, "settled_at": at, "no_report": n, "revised": n, "revised_at": at}
            for occ, n in sorted(revised.items())  # in key order, as the deliveries are locked
        ]
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[DeliverySettlement.occurrence_id],
            set_={
                "revised": DeliverySettlement.revised + statement.excluded.revised,
                "revised_at": statement.excluded.revised_at,
            },
        )
    )


def _count_unknown(
    *, session: Session, reports: Sequence[tuple[protocol.Report, datetime]], result: ApplyResult
) -> None:
    """Count the reports without a delivery: from unknown devices, or for occurrences not sent to them."""
    by_occurrence: dict[int, set[str]] = {}
    for report, _ in reports:
        by_occurrence.setdefault(report.occurrence_id, set()).add(report.device_id)
    delivered: set[tuple[int, str]] = set()
    for occurrence_id, device_ids in by_occurrence.items():
        delivered.update(
            session.execute(
                select(Delivery.occurrence_id, Delivery.device_id).where(
                    Delivery.occurrence_id == occurrence_id, Delivery.device_id.in_(device_ids)
                )
            )
        )
    lost = {r.device_id for r, _ in reports if (r.occurrence_id, r.device_id) not in delivered}
    known = set(session.scalars(select(Device.id).where(Device.id.in_(lost))).all())
    for report, _ in reports:
        if (report.occurrence_id, report.device_id) in delivered:
            continue
        if report.device_id in known:
            result.unknown_delivery += 1
        else:
            result.unknown_device += 1
            result.unknown_devices.add(report.device_id)


def _expire_deliveries(session: Session) -> None:
    """Deliveries the session holds were changed behind its back: reload them when next read."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Delivery):
            session.expire(obj)


# ---------------------------------------------------------------- writing reports
#
# A batch is up to 2,000 reports (devices.ingest.BATCH_MAX). Each report is one raw row, kept when
# its device was sent that occurrence, and one guarded step of that delivery. The statements are
# built once per dialect from the Core constructs below and run at driver level
# (`exec_driver_sql`): SQLAlchemy's per-row parameter processing cost more than the database work.
# SQLite runs them once per report with executemany (in process, no round trips to save);
# PostgreSQL gets the batch as one array per column (unnest), a few statements per batch.

FINAL_RANK = max(STATE_RANK.values())
_RANK = {state.value: rank for state, rank in STATE_RANK.items()}
_DELIVERIES = Delivery.__table__
_REPORTS = ReportRow.__table__
# What a batch row holds, in this order (see apply_reports); `now` is the same for the whole batch.
_FIELDS: dict[str, TypeEngine] = {
    "occurrence_id": Integer(),
    "device_id": String(),
    "state": String(),
    "rank": Integer(),
    "reported_at": DateTime(),
    "received_at": DateTime(),  # ours: the arrival time
    "seconds_played": Float(),
    "error": Text(),
    "final_seconds": Float(),  # seconds_played of a final report, else NULL
    "final_error": Text(),  # error of a final report, else NULL
    "now": DateTime(),
}
_RAW_COLUMNS = (
    "device_id",
    "occurrence_id",
    "state",
    "reported_at",
    "received_at",
    "seconds_played",
    "error",
)
_STEP_COLUMNS = ("state", "rank", "reported_at", "received_at", "final_seconds", "final_error")
_RANK_AT = list(_FIELDS).index("rank")
_STATE_AT = list(_FIELDS).index("state")
_FINAL_SECONDS_AT = list(_FIELDS).index("final_seconds")


def _sql_literal(value: str | int) -> ColumnElement:
    return literal_column(f"'{value}'" if isinstance(value, str) else str(value))


def _seconds(dialect_name: str, later: ColumnElement, earlier: ColumnElement) -> ColumnElement[float]:
    """later - earlier, in seconds, in this database's own date arithmetic."""
    if dialect_name == "postgresql":
        return extract("epoch", later - earlier)
    # SQLite keeps times as text; julianday reads it (to the millisecond).
    return (func.julianday(later) - func.julianday(earlier)) * literal_column("86400.0")


def _advance_statement(
    src: Mapping[str, ColumnElement], match: ColumnElement[bool], dialect_name: str
) -> Update:
    """UPDATE of deliveries (those `match` picks) by reports, each taking effect only as the rules allow.

    A delivery moves only to a higher state rank, by a report dated no earlier than the steps the
    speaker reported before (else it is out of order). One final state replaces another only on
    evidence: `played` with seconds_played > 0 replaces `failed`, `skipped` or `preempted` (sound
    came out of the loudspeaker; nothing un-plays it), and nothing replaces `played`. A `no_report`
    delivery (finalised at the deadline, its `finished_at`) still takes a final report that reached
    us by the deadline — it may have been waiting in an ingest batch when the deadline job ran — or,
    up to LATE_REPORT_WINDOW_S after it, one whose speaker reached that state by the deadline on our
    clock: its `at` plus the clock offset it last reported (server minus speaker; none measured
    counts as 0). `received` sets `received_at`
    (so does any report while it is still empty), `playing` sets `playing_at`, a final report sets
    `finished_at`, `seconds_played` and `error`. The rules sit in the WHERE clause, evaluated on the
    row as it is when the update runs, so nothing moves a delivery backwards, not even a row another
    transaction changed since this batch began. The `no_report` tests (the device lookup, the date
    arithmetic) only run for a final report on a `no_report` delivery.
    """
    t = _DELIVERIES
    rank, at = src["rank"], src["reported_at"]
    current_rank = case(
        *(
            (t.c.state == _sql_literal(s.value), _sql_literal(r))
            for s, r in STATE_RANK.items()
            if r < FINAL_RANK
        ),
        else_=_sql_literal(FINAL_RANK),
    )
    final = rank == _sql_literal(FINAL_RANK)
    devices = Device.__table__
    clock_offset = func.coalesce(
        select(devices.c.clock_offset_s).where(devices.c.id == t.c.device_id).scalar_subquery(),
        literal_column("0.0"),
    )
    arrived = src["received_at"]
    # The speaker's own times of the steps it reported so far (a no_report's finished_at is our
    # deadline, not a step of the speaker's): a report dated before any of them is out of order.
    in_order = and_(
        or_(t.c.received_at.is_(None), at >= t.c.received_at),
        or_(t.c.playing_at.is_(None), at >= t.c.playing_at),
        or_(
            t.c.finished_at.is_(None),
            t.c.state == _sql_literal(DeliveryState.no_report.value),
            at >= t.c.finished_at,
        ),
    )
    forward = or_(
        and_(current_rank < rank, in_order),
        and_(
            t.c.state.in_([_sql_literal(s.value) for s in SUPERSEDED_BY_PLAYED]),
            src["state"] == _sql_literal(DeliveryState.played.value),
            src["final_seconds"] > literal_column("0"),
            in_order,
        ),
        and_(
            t.c.state == _sql_literal(DeliveryState.no_report.value),
            final,
            or_(
                t.c.finished_at >= arrived,
                and_(
                    _seconds(dialect_name, arrived, t.c.finished_at)
                    <= literal_column(str(LATE_REPORT_WINDOW_S)),
                    _seconds(dialect_name, t.c.finished_at, at) >= clock_offset,
                ),
            ),
        ),
    )
    return (
        update(t)
        .where(match, forward)
        .values(
            state=src["state"],
            received_at=case(
                (or_(rank == _sql_literal(_RANK["received"]), t.c.received_at.is_(None)), at),
                else_=t.c.received_at,
            ),
            playing_at=case((rank == _sql_literal(_RANK["playing"]), at), else_=t.c.playing_at),
            finished_at=case((final, at), else_=t.c.finished_at),
            seconds_played=case(
                # NULL duration (sent before migration 0008): no bound
                (and_(final, src["final_seconds"] > t.c.duration_s), t.c.duration_s),
                (final, src["final_seconds"]),
                else_=t.c.seconds_played,
            ),
            seconds_reported=case(
                (
                    final,
                    case(
                        (
                            src["final_seconds"] > t.c.duration_s + literal_column(str(SECONDS_SLACK_S)),
                            src["final_seconds"],
                        ),
                        else_=null(),
                    ),
                ),
                else_=t.c.seconds_reported,
            ),
            error=case((final, src["final_error"]), else_=t.c.error),
            updated_at=bindparam("now", type_=DateTime()),
        )
    )


def _sqlite_stamp(value: datetime) -> str:
    # The text SQLAlchemy's SQLite DateTime stores, "2026-03-02 00:30:00.000000" (always with
    # microseconds), so that values written here compare as text with those written by the ORM.
    # [:26] drops the "+00:00" (cheaper than replacing tzinfo first).
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


class _RowByRow:
    """Each statement once per report, with the driver's executemany (SQLite)."""

    stamp = staticmethod(_sqlite_stamp)

    def __init__(self, dialect: Dialect) -> None:
        src = {
            # A bare NULL in a SELECT list has no type on some databases: say it is a number.
            name: cast(bindparam(name), typ) if name == "seconds_played" else bindparam(name, type_=typ)
            for name, typ in _FIELDS.items()
        }
        t = _DELIVERIES
        match = and_(t.c.occurrence_id == src["occurrence_id"], t.c.device_id == src["device_id"])
        delivered = select(literal_column("1")).where(match).exists()
        # A resent report (same occurrence, device, state and `at`) is stored once.
        store = (
            sqlite.insert(_REPORTS)
            .from_select(list(_RAW_COLUMNS), select(*(src[name] for name in _RAW_COLUMNS)).where(delivered))
            .on_conflict_do_nothing()
        )
        self._store, self._store_params = self._compile(store, dialect)
        self._advance, self._advance_params = self._compile(
            _advance_statement(src, match, dialect.name), dialect
        )

    @staticmethod
    def _compile(statement: Executable, dialect: Dialect) -> tuple[str, Callable[[list[tuple]], list]]:
        compiled = statement.compile(dialect=dialect)
        fields = list(_FIELDS)
        names = list(compiled.positiontup or ()) if dialect.positional else list(compiled.params)
        parts = compiled.string.split("?")
        if dialect.paramstyle == "qmark" and len(parts) == len(names) + 1:
            # SQLite's numbered parameters, ?N for the N-th field of a batch row: a value the
            # statement uses several times (rank seven times, reported_at four) is bound once, and
            # rows that hold every field up to the last one used go to the driver as they are.
            sql = parts[0] + "".join(
                f"?{fields.index(name) + 1}{part}" for name, part in zip(names, parts[1:], strict=True)
            )
            used = max(fields.index(name) for name in names) + 1
            if used == len(fields):
                return sql, lambda rows: rows
            return sql, lambda rows: [row[:used] for row in rows]
        pick = itemgetter(*(fields.index(name) for name in names))
        if dialect.positional:
            return compiled.string, lambda rows: [pick(row) for row in rows]
        return compiled.string, lambda rows: [dict(zip(names, pick(row), strict=True)) for row in rows]

    def write(self, conn: Connection, rows: list[tuple]) -> tuple[int, int, Counter[int]]:
        """Store the raw reports and advance their deliveries; return (stored, applied, revised)."""
        # The INSERT takes SQLite's write lock: nothing changes the deliveries until we commit.
        stored = conn.exec_driver_sql(self._store, self._store_params(rows)).rowcount
        # Only occurrences whose deadline left no_report deliveries can see one change: a lookup in
        # a small table, then the exact keys of those occurrences' final reports only.
        occurrences = {row[0] for row in rows if row[_RANK_AT] == FINAL_RANK}
        settled = _unsettled(conn, occurrences) if occurrences else set()
        finals = {row[:2] for row in rows if row[0] in settled and row[_RANK_AT] == FINAL_RANK}
        waiting = _keys_in(conn, finals, no_report=True) if finals else set()
        # A delivery's reports in arrival order (the sort is stable), so several in one batch apply
        # as they would one by one; deliveries in key order, so writers lock rows in one order.
        ordered = sorted(rows, key=itemgetter(0, 1))
        applied = conn.exec_driver_sql(self._advance, self._advance_params(ordered)).rowcount
        revised = (
            Counter(occ for occ, _ in _keys_in(conn, waiting, no_report=False)) if waiting else Counter()
        )
        return stored, applied, revised


def _unsettled(conn: Connection, occurrence_ids: set[int]) -> set[int]:
    """Those occurrences with no_report deliveries that no late report has changed yet."""
    s = DeliverySettlement.__table__
    return set(
        conn.scalars(
            select(s.c.occurrence_id).where(
                s.c.occurrence_id.in_(occurrence_ids), s.c.no_report > s.c.revised
            )
        )
    )


def _keys_in(conn: Connection, keys: set[tuple[int, str]], *, no_report: bool) -> set[tuple[int, str]]:
    """Those of the (occurrence id, device id) keys whose delivery is `no_report` (or is not)."""
    t = _DELIVERIES
    state = t.c.state == DeliveryState.no_report if no_report else t.c.state != DeliveryState.no_report
    # Few occurrences per batch: occurrences x devices probes of the unique index, then the exact keys.
    found = conn.execute(
        select(t.c.occurrence_id, t.c.device_id).where(
            t.c.occurrence_id.in_({occ for occ, _ in keys}),
            t.c.device_id.in_({dev for _, dev in keys}),
            state,
        )
    )
    return {(occ, dev) for occ, dev in found if (occ, dev) in keys}


def _unnest(*columns: tuple[str, TypeEngine]) -> TableValuedAlias:
    """unnest(:a::T[], :b::U[], ...) AS batch(a, b, ...): a table from one array per column."""
    return (
        func.unnest(*(bindparam(name, type_=ARRAY(typ)) for name, typ in columns))
        .table_valued(*(column(name, typ) for name, typ in columns))
        .render_derived()
        .alias("batch")
    )


def _as_arrays(names: Sequence[str], rows: list[tuple]) -> dict[str, object]:
    """Rows of values as one list per column, keyed by column name."""
    return dict(zip(names, map(list, zip(*rows, strict=True)), strict=True))


class _Arrays:
    """The batch as one array per column, a few statements per batch (PostgreSQL)."""

    stamp = staticmethod(_naive_utc)

    def __init__(self, dialect: Dialect) -> None:
        t = _DELIVERIES
        keys = _unnest(("occurrence_id", Integer()), ("device_id", String()))
        # Row locks taken in key order up front: concurrent writers (ingest workers on a shared
        # subscription) whose batches touch the same deliveries wait for each other, never deadlock.
        lock = (
            select(t.c.occurrence_id, t.c.device_id, t.c.id, t.c.state)
            .join(keys, and_(t.c.occurrence_id == keys.c.occurrence_id, t.c.device_id == keys.c.device_id))
            .order_by(t.c.occurrence_id, t.c.device_id)
            .with_for_update(of=t)
        )
        raw = _unnest(*((name, _FIELDS[name]) for name in _RAW_COLUMNS))
        store = (
            postgresql.insert(_REPORTS)
            .from_select(list(_RAW_COLUMNS), select(*raw.c))
            .on_conflict_do_nothing()
        )
        steps = _unnest(("id", Integer()), *((name, _FIELDS[name]) for name in _STEP_COLUMNS))
        advance = _advance_statement(steps.c, t.c.id == steps.c.id, dialect.name)
        self._lock, self._store, self._advance = (
            self._binary(str(s.compile(dialect=dialect)), dialect) for s in (lock, store, advance)
        )
        self._raw = itemgetter(*(list(_FIELDS).index(name) for name in _RAW_COLUMNS))
        self._step = itemgetter(*(list(_FIELDS).index(name) for name in _STEP_COLUMNS))

    @staticmethod
    def _binary(sql: str, dialect: Dialect) -> str:
        # psycopg 3 sends %(name)b parameters in binary: arrays of 2,000 values dump several times
        # faster that way than as text.
        return re.sub(r"%\((\w+)\)s", r"%(\1)b", sql) if dialect.driver == "psycopg" else sql

    def write(self, conn: Connection, rows: list[tuple]) -> tuple[int, int, Counter[int]]:
        """Store the raw reports and advance their deliveries; return (stored, applied, revised)."""
        # Everything that does not need the locked rows is prepared before taking them: other
        # workers wait for those locks, so the less done while holding them the better.
        keys = sorted({row[:2] for row in rows})
        raw = [self._raw(row) for row in rows]
        # One UPDATE changes a row at most once: step k takes each delivery's k-th report of the
        # batch, so a delivery's reports apply in arrival order, as they would one by one.
        steps: list[tuple[list[tuple[int, str]], list[tuple]]] = []
        seen: Counter[tuple[int, str]] = Counter()
        for row in rows:
            key = row[:2]
            k = seen[key]
            seen[key] += 1
            if k == len(steps):
                steps.append(([], []))
            steps[k][0].append(key)
            steps[k][1].append(self._step(row))
        ids: dict[tuple[int, str], int] = {}
        no_report: set[tuple[int, str]] = set()
        for occurrence_id, device_id, delivery_id, state in conn.exec_driver_sql(
            self._lock, {"occurrence_id": [k[0] for k in keys], "device_id": [k[1] for k in keys]}
        ).all():
            ids[(occurrence_id, device_id)] = delivery_id
            if state == DeliveryState.no_report.value:
                no_report.add((occurrence_id, device_id))
        if not ids:
            return 0, 0, Counter()
        if len(ids) < len(keys):  # reports for deliveries that do not exist are not stored
            raw = [r for r, row in zip(raw, rows, strict=True) if row[:2] in ids]
            steps = [
                (
                    [k for k in step_keys if k in ids],
                    [v for k, v in zip(step_keys, values, strict=True) if k in ids],
                )
                for step_keys, values in steps
            ]
        # Rows locked: `no_report` ones that get a final report below are revised if they change.
        waiting = (
            {ids[row[:2]] for row in rows if row[:2] in no_report and row[_RANK_AT] == FINAL_RANK}
            if no_report
            else set()
        )
        inserted = conn.exec_driver_sql(self._store, _as_arrays(_RAW_COLUMNS, raw)).rowcount
        applied = 0
        for step_keys, values in steps:
            if not step_keys:
                continue
            params = _as_arrays(_STEP_COLUMNS, values)
            params["id"] = [ids[k] for k in step_keys]
            params["now"] = rows[0][-1]
            applied += conn.exec_driver_sql(self._advance, params).rowcount
        revised: Counter[int] = Counter()
        if waiting:
            t = _DELIVERIES
            revised.update(
                conn.scalars(
                    select(t.c.occurrence_id).where(t.c.id.in_(waiting), t.c.state != DeliveryState.no_report)
                )
            )
        return inserted, applied, revised


_writers: dict[tuple[str, str, str], _RowByRow | _Arrays] = {}


def _report_writer(dialect: Dialect) -> _RowByRow | _Arrays:
    """The report writer for a dialect, its statements compiled on first use."""
    key = (dialect.name, dialect.driver, dialect.paramstyle)
    writer = _writers.get(key)
    if writer is None:
        writer = _writers[key] = _Arrays(dialect) if dialect.name == "postgresql" else _RowByRow(dialect)
    return writer
