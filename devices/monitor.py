"""The fleet monitor: evaluates alarms and sends a periodic signed `sync`, as one asyncio task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from core.db import session_scope
from cunxiang_shared import protocol
from devices import fleet
from devices.commands import CommandSender
from devices.transport import LinkError

log = logging.getLogger(__name__)

# Reports are asked for again from this long before the server's link went down (clock slack).
RESEND_MARGIN = timedelta(minutes=2)


class FleetMonitor:
    """Every `interval_s`: raise/clear alarms; every `sync_interval_s`: `sync` to every county topic."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        sender: CommandSender,
        rules: fleet.AlarmRules,
        interval_s: float,
        sync_interval_s: float,
    ) -> None:
        self._session_factory = session_factory
        self._sender = sender
        self.rules = rules
        self.interval_s = interval_s
        self.sync_interval_s = sync_interval_s
        self._task: asyncio.Task[None] | None = None
        self._last_sync = float("-inf")
        self._counties: list[str] = []
        self.runs = 0
        listeners = getattr(sender.link, "reconnect_listeners", None)
        if listeners is not None:
            listeners.append(self._on_reconnect)

    def start(self) -> None:
        """Start the loop in the running event loop."""
        self._task = asyncio.create_task(self._run(), name="fleet-monitor")

    async def stop(self) -> None:
        """Stop the loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:  # a database hiccup must not end the monitor
                log.exception("fleet monitor run failed")
            await asyncio.sleep(self.interval_s)

    def run_once(self) -> fleet.AlarmChanges:
        """One evaluation (and a sync when due)."""
        with session_scope(self._session_factory) as session:
            changes = fleet.evaluate_alarms(session=session, rules=self.rules)
            self._counties = fleet.county_codes(session=session)
        if self._sync_due():
            self._send_sync(self._counties)
        self.runs += 1
        return changes

    def _sync_due(self) -> bool:
        return self.sync_interval_s > 0 and time.monotonic() - self._last_sync >= self.sync_interval_s

    def request_reports(self, since: datetime) -> None:
        """Ask every speaker to send again its reports made since `since` (a server that was away:
        what the broker did not keep for it comes back this way)."""
        if not self._counties:
            with session_scope(self._session_factory) as session:
                self._counties = fleet.county_codes(session=session)
        log.info("asking speakers for their reports since %s", since)
        self._send_sync(self._counties, reports_since=since)

    def _on_reconnect(self, down_since: datetime) -> None:
        # Speakers that came back before us flushed their reports to nobody: ask for them again.
        since = down_since - RESEND_MARGIN
        log.info(
            "link back after an outage since %s: asking speakers for reports since %s", down_since, since
        )
        self._send_sync(self._counties, reports_since=since)

    def _send_sync(self, counties: list[str], reports_since: datetime | None = None) -> None:
        if not counties:
            return
        self._last_sync = time.monotonic()
        topics = [protocol.area_command_topic(code) for code in counties]
        try:
            self._sender.send(protocol.SyncCommand(reports_since=reports_since), topics)
        except LinkError as exc:
            log.warning("periodic sync not sent: %s", exc)
