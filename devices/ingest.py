"""Report ingestion: speaker messages from MQTT into the database, in batches.

paho's network thread only appends raw messages to an inbox (a deque: no lock, no wake-up unless
the worker sleeps); one worker thread takes them in batches, parses them and writes each batch
in one transaction. Nothing a speaker sends can stop the worker: every bad message is dropped
with a counted, logged reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from core.clock import utcnow
from core.db import session_scope
from cunxiang_shared import protocol
from devices import fleet, report_writer
from devices import service as device_service
from devices.transport import Link, shared

log = logging.getLogger(__name__)

# A batch is written when it has this many messages or is this old, whichever comes first.
BATCH_MAX = 2000
FLUSH_INTERVAL_S = 0.05
# Messages held in memory before new ones are dropped (and counted) rather than exhaust memory.
QUEUE_MAX = 200_000
# The idle worker looks at its inbox at least this often (a lost wake-up costs no more).
IDLE_WAKE_S = 1.0

SUBSCRIPTIONS = (
    protocol.device_topic("+", "report"),
    protocol.device_topic("+", "status"),
    protocol.device_topic("+", "online"),
)

Message = tuple[str, bytes, datetime]


class ReportIngestor:
    """Subscribes to every speaker's report/status/online topic and records what arrives.

    With a `shared_group`, the subscriptions are shared (`$share/GROUP/...`): the broker gives
    each message to one ingestor of the group, so N processes split the load (docs/scaling.md).
    """

    def __init__(
        self,
        *,
        link: Link,
        session_factory: sessionmaker[Session],
        shared_group: str = "",
        on_online: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._link = link
        # Called on the worker thread, after the commit, with the speakers whose `online` 1 a batch
        # recorded (docs/protocol.md: the server re-sends what is still due when a speaker connects).
        self.on_online = on_online
        self._session_factory = session_factory
        self.shared_group = shared_group
        # Appended by paho's thread only, taken by the worker only: deque's append and popleft
        # are atomic, so the hot path takes no lock.
        self._inbox: deque[Message] = deque()
        self._wake = threading.Event()
        self._sleeping = False  # the worker waits on _wake; set it after appending
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._accepted = 0  # messages put in the inbox (paho's thread)
        self._handled = 0  # messages written or dropped by the worker
        self._idle = threading.Condition()
        self.counts: Counter[str] = Counter()
        self._refusals_logged: set[str] = set()  # kinds of refusal already logged once

    def start(self) -> None:
        """Subscribe and start the worker thread."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="report-ingestor", daemon=True)
        self._thread.start()
        for topic in SUBSCRIPTIONS:
            self._link.subscribe(shared(self.shared_group, topic), self._on_message, qos=protocol.QOS_REPORT)

    def stop(self) -> None:
        """Write what is queued, then stop the worker."""
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout=10)
            self._thread = None

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything received so far is written; False on timeout."""
        target = self._accepted
        self._wake.set()
        with self._idle:
            return self._idle.wait_for(lambda: self._handled >= target, timeout)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if len(self._inbox) >= QUEUE_MAX:
            self.counts["dropped_queue_full"] += 1
            log.error("ingest queue full; dropped a message on %s", topic)
            return
        self._inbox.append((topic, payload, utcnow()))
        self._accepted += 1
        if self._sleeping:
            self._wake.set()

    def _sleep(self, timeout: float) -> None:
        """Wait until a message arrives, stop() or flush() is called, or timeout passes."""
        self._wake.clear()
        self._sleeping = True
        try:
            if not self._inbox and not self._stopping:  # checked after _sleeping is visible
                self._wake.wait(timeout)
        finally:
            self._sleeping = False

    def _take(self) -> list[Message]:
        """The next batch: what is waiting, plus what arrives within FLUSH_INTERVAL_S of the first
        message, up to BATCH_MAX; empty only when stopping with nothing left."""
        inbox = self._inbox
        while not inbox:
            if self._stopping:
                return []
            self._sleep(IDLE_WAKE_S)
        batch: list[Message] = []
        deadline = time.monotonic() + FLUSH_INTERVAL_S
        while len(batch) < BATCH_MAX:
            try:
                batch.append(inbox.popleft())
                continue
            except IndexError:
                pass
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping:
                break
            self._sleep(left)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                break
            try:
                self._write_batch(batch)
            finally:
                with self._idle:
                    self._handled += len(batch)
                    self._idle.notify_all()

    def _write_batch(self, batch: list[Message]) -> None:
        """Parse a batch and store it in one transaction; if that fails, store each message in its
        own, so one message the database refuses cannot cost other speakers their reports."""
        parsed = self._parse(batch)
        try:
            self._store(parsed)
            return
        except Exception as exc:
            if parsed.size <= 1:
                self.counts["write_errors"] += parsed.size
                log.exception("could not store a speaker message")
                return
            self.counts["batch_errors"] += 1
            log.warning("storing %d speaker messages failed (%s); storing them one by one", parsed.size, exc)
        for single in parsed.split():
            try:
                self._store(single)
            except Exception as exc:
                # The database is unavailable, or this message trips a bug: count, log, go on.
                self.counts["write_errors"] += 1
                log.warning("could not store a speaker message (%s): %s", single.describe(), exc)

    def _parse(self, batch: list[Message]) -> _Parsed:
        parsed = _Parsed()
        for topic, payload, arrived in batch:
            self.counts["received"] += 1
            try:
                device_id, leaf = protocol.device_id_from_topic(topic)
                if not payload and leaf in ("online", "status"):
                    # A deleted retained message (zero-length retained publish): nothing to record.
                    self.counts["retained_cleared"] += 1
                    continue
                if leaf == "report":
                    report = protocol.parse_report(payload)
                    if report.device_id != device_id:
                        self._refuse_other_device("report", topic, report.device_id)
                        continue
                    parsed.reports.append((report, arrived))
                elif leaf == "online":
                    if payload not in (protocol.ONLINE, protocol.OFFLINE):
                        raise protocol.ProtocolError(f"online flag must be 1 or 0, got {payload[:16]!r}")
                    parsed.online[device_id] = (payload == protocol.ONLINE, arrived)
                elif leaf == "status":
                    status = protocol.parse_status(payload)
                    if status.device_id != device_id:
                        self._refuse_other_device("status", topic, status.device_id)
                        continue
                    parsed.statuses[device_id] = (status, arrived)  # the newest of the batch wins
                else:
                    continue  # our own command topics are not subscribed; ignore anything else
            except protocol.ProtocolError as exc:
                self.counts["malformed"] += 1
                log.warning("dropped message on %s: %s", topic, exc)
        return parsed

    def _refuse_other_device(self, kind: str, topic: str, named: str) -> None:
        """Drop a message whose payload speaks for another device than its topic's: on a broker
        with per-speaker accounts, the topic is the only part the broker vouches for."""
        self.counts[f"{kind}_other_device"] += 1
        if kind in self._refusals_logged:
            log.debug("dropped a %s on %s naming device %r", kind, topic, named)
            return
        self._refusals_logged.add(kind)
        log.warning(
            "dropped a %s on %s naming device %r (counted as %s_other_device; further ones are "
            "counted, not logged)",
            kind, topic, named, kind,
        )  # fmt: skip

    def _store(self, parsed: _Parsed) -> None:
        with session_scope(self._session_factory) as session:
            result = report_writer.apply_reports(session=session, reports=parsed.reports)
            unknown_online = device_service.set_online_many(session=session, flags=parsed.online)
            status_applied, status_unknown = fleet.apply_statuses(session=session, statuses=parsed.statuses)
        came_online = [device_id for device_id, (up, _at) in parsed.online.items() if up]
        if came_online and self.on_online is not None:
            try:
                self.on_online(came_online)
            except Exception:  # a resend that fails must not cost the reports
                log.exception("re-sending to %d speakers that came online failed", len(came_online))
        # counted only once the transaction committed
        self.counts["unknown_device"] += unknown_online + status_unknown + result.unknown_device
        self.counts["status"] += status_applied
        self.counts["applied"] += result.applied
        self.counts["stale"] += result.stale
        self.counts["out_of_order"] += result.out_of_order
        self.counts["duplicate_report"] += result.duplicate
        self.counts["unknown_delivery"] += result.unknown_delivery
        if result.unknown_devices:
            log.warning("reports from unknown devices: %s", ", ".join(sorted(result.unknown_devices)[:10]))
        if result.unknown_delivery:
            log.warning("%d reports for occurrences not sent to their device", result.unknown_delivery)
        if result.revised:
            # Airings played during an outage, reported after the deadline (devices.report_writer).
            self.counts["revised"] += sum(result.revised.values())
            log.info(
                "late reports changed deliveries after their deadline: %s",
                ", ".join(f"occurrence {occ}: {n}" for occ, n in result.revised.items()),
            )


@dataclass
class _Parsed:
    """The valid messages of a batch, by kind."""

    reports: list[tuple[protocol.Report, datetime]] = field(default_factory=list)
    online: dict[str, tuple[bool, datetime]] = field(default_factory=dict)
    statuses: dict[str, tuple[protocol.Status, datetime]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.reports) + len(self.online) + len(self.statuses)

    def split(self) -> list[_Parsed]:
        """One _Parsed per message."""
        return (
            [_Parsed(reports=[r]) for r in self.reports]
            + [_Parsed(online={d: v}) for d, v in self.online.items()]
            + [_Parsed(statuses={d: v}) for d, v in self.statuses.items()]
        )

    def describe(self) -> str:
        if self.reports:
            report = self.reports[0][0]
            return f"report of {report.device_id} for occurrence {report.occurrence_id}"
        if self.online:
            return f"online flag of {next(iter(self.online))}"
        return f"status of {next(iter(self.statuses), '?')}"


# How long the online watcher gathers speakers that came online before handing them over (a burst
# of reconnects after a broker restart becomes a few batches, not one query per speaker).
ONLINE_BATCH_S = 0.2


class OnlineWatcher:
    """A server that does not ingest (separate `cunxiang ingest` workers do) still learns when a
    speaker connects: it subscribes to the online flags only, and calls `on_online(device_ids)`
    on a thread of its own with the speakers whose flag said 1 (docs/protocol.md §1)."""

    def __init__(self, *, link: Link, on_online: Callable[[list[str]], None]) -> None:
        self._link = link
        self.on_online = on_online
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Subscribe (before the link connects, so queued flags find the handler) and start the thread."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="online-watcher", daemon=True)
        self._thread.start()
        self._link.subscribe(protocol.device_topic("+", "online"), self._on_message, qos=protocol.QOS_REPORT)

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout=10)
            self._thread = None

    def _on_message(self, topic: str, payload: bytes) -> None:
        if payload != protocol.ONLINE:
            return
        try:
            device_id, _leaf = protocol.device_id_from_topic(topic)
        except protocol.ProtocolError:
            return
        with self._lock:
            self._pending.add(device_id)
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait()
            if self._stopping:
                break
            time.sleep(ONLINE_BATCH_S)
            self._wake.clear()
            with self._lock:
                came, self._pending = sorted(self._pending), set()
            if came:
                try:
                    self.on_online(came)
                except Exception:  # a resend that fails must not end the watcher
                    log.exception("re-sending to %d speakers that came online failed", len(came))
