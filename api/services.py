"""The long-running pieces of one server process, started and stopped in one place."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from api import migrate
from core import auth
from core.db import make_engine, make_session_factory
from core.settings import Settings
from devices import credentials
from devices import keys as device_keys
from devices.commands import CommandSender
from devices.fleet import AlarmRules
from devices.ingest import OnlineWatcher, ReportIngestor
from devices.monitor import FleetMonitor
from devices.transport import MqttLink, claim_client_id
from scheduler import dispatch
from scheduler.jobs import JobContext
from scheduler.runner import SchedulerRunner

log = logging.getLogger(__name__)

# The embedded broker's server account password, in the data dir (0600), made at first start.
SERVER_PASSWORD_FILE = "mqtt-server.password"


@dataclass
class Services:
    settings: Settings
    # Simulated speakers per village started in a child process (0 = none).
    simulate_per_village: int = 0
    simulate_args: list[str] = field(default_factory=list)

    engine: Engine | None = None
    session_factory: sessionmaker[Session] | None = None
    token_secret: str = ""
    broker: object | None = None
    broker_url: str = ""
    link: MqttLink | None = None
    sender: CommandSender | None = None
    ingestor: ReportIngestor | None = None
    watcher: OnlineWatcher | None = None
    runner: SchedulerRunner | None = None
    simulator: subprocess.Popen | None = None
    monitor: FleetMonitor | None = None
    # Holds this process's MQTT client-id slot (transport.claim_client_id) while it runs.
    client_id_lock: IO[bytes] | None = None

    async def start(self) -> None:
        """Database, broker, link, ingestor, scheduler, and (on request) simulated speakers."""
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.audio_dir.mkdir(parents=True, exist_ok=True)
        url = settings.database_url
        await asyncio.to_thread(migrate.upgrade, url)
        self.engine = make_engine(url, echo=settings.database.echo)
        self.session_factory = make_session_factory(self.engine)
        self.token_secret = settings.auth.secret_key or auth.load_or_create_secret(settings.data_dir)
        signer = device_keys.load_or_create(settings.data_dir).signer()

        if settings.mqtt.url:
            self.broker_url = settings.mqtt.url
        elif settings.devices.ingest_shared_group:
            raise RuntimeError(
                "CUNXIANG_DEVICES_INGEST_SHARED_GROUP needs an external broker (CUNXIANG_MQTT_URL): "
                "the embedded broker has no shared subscriptions"
            )
        else:
            self.broker_url = await self._start_broker()
        # A fixed client id and a persistent session: the broker queues the speakers' reports while
        # this process is away (killed, restarting) and hands them over when it is back.
        client_id, self.client_id_lock = claim_client_id(settings.mqtt.client_id, settings.data_dir)
        self.link = MqttLink(
            self.broker_url,
            client_id=client_id,
            persistent=True,
            ca_file=settings.devices.tls_ca_file,
            cert_file=settings.devices.tls_cert_file,
            key_file=settings.devices.tls_key_file,
        )
        self.sender = CommandSender(link=self.link, signer=signer)
        if settings.devices.ingest_in_server:
            self.ingestor = ReportIngestor(
                link=self.link,
                session_factory=self.session_factory,
                shared_group=settings.devices.ingest_shared_group,
                on_online=self._resend_to,
            )
            self.ingestor.start()  # subscribed before connecting: the queued reports find their handler
        else:  # `cunxiang ingest` workers record the flags; this process still re-sends on connect
            self.watcher = OnlineWatcher(link=self.link, on_online=self._resend_to)
            self.watcher.start()
        self.link.reconnect_listeners.append(self._on_link_back)
        await asyncio.to_thread(self.link.connect)
        log.info("MQTT client id %s (persistent session)", client_id)
        self.runner = SchedulerRunner(
            engine=self.engine,
            context=JobContext(settings=settings, session_factory=self.session_factory, sender=self.sender),
        )
        self.runner.start()
        d = settings.devices
        self.monitor = FleetMonitor(
            session_factory=self.session_factory,
            sender=self.sender,
            rules=AlarmRules(d.offline_alarm_s, d.clock_drift_alarm_s, d.failure_alarm_count),
            interval_s=d.monitor_interval_s,
            sync_interval_s=d.sync_interval_s,
        )
        self.monitor.start()
        # Reports the broker did not keep for us (the embedded broker keeps nothing across a
        # restart): every speaker sends again what it reported since the earliest open airing.
        since = await asyncio.to_thread(dispatch.reports_since, session_factory=self.session_factory)
        if since is not None:
            await asyncio.to_thread(self.monitor.request_reports, since)
        if self.simulate_per_village > 0:
            self._start_simulator()

    async def _start_broker(self) -> str:
        """Start the embedded broker; return the URL the server's own link connects with."""
        from devices.broker import SERVER_USERNAME, Accounts, start_embedded_broker

        m = self.settings.mqtt
        if m.open_broker:
            self.broker = await start_embedded_broker(m.host, m.port, open_any_host=m.open_broker_any_host)
            return self.broker.url
        password = credentials.load_or_create_password(self.settings.data_dir / SERVER_PASSWORD_FILE)
        accounts = Accounts(self.session_factory, {SERVER_USERNAME: credentials.hash_password(password)})
        self.broker = await start_embedded_broker(m.host, m.port, accounts=accounts)
        log.info("embedded MQTT broker on %s (accounts required)", self.broker.url)
        return self.broker.url_for(SERVER_USERNAME, password)

    def _resend_to(self, device_ids: list[str]) -> None:
        """Speakers that came online get the play commands still due for them (ingest worker thread)."""
        dispatch.resend_open(
            session_factory=self.session_factory, sender=self.sender, settings=self.settings,
            device_ids=device_ids,
        )  # fmt: skip

    def _on_link_back(self, _down_since: datetime) -> None:
        """The link is back after an outage: open airings' commands go out again (paho's thread:
        the work runs on a thread of its own)."""

        def resend() -> None:
            try:
                dispatch.resend_open(
                    session_factory=self.session_factory, sender=self.sender, settings=self.settings
                )
            except Exception:
                log.exception("re-sending open airings after the link came back failed")

        threading.Thread(target=resend, name="resend-open", daemon=True).start()

    def _start_simulator(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "api.cli",
            "simulate",
            "--per-village",
            str(self.simulate_per_village),
            "--broker",
            # each simulated speaker connects with its own account (cunxiang simulate issues them)
            self.broker.url if self.broker is not None else self.broker_url,
            "--data-dir",
            str(self.settings.data_dir),
            *self.simulate_args,
        ]
        env = {**os.environ, "CUNXIANG_DATABASE_URL": self.settings.database_url}
        self.simulator = subprocess.Popen(cmd, env=env)
        log.info("started simulated speakers (pid %s): %s", self.simulator.pid, " ".join(cmd[3:]))

    async def stop(self) -> None:
        """Stop everything started, in reverse order."""
        if self.simulator is not None and self.simulator.poll() is None:
            self.simulator.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.simulator.wait, 15)
            except subprocess.TimeoutExpired:
                self.simulator.kill()
        if self.monitor is not None:
            await self.monitor.stop()
        if self.runner is not None:
            self.runner.shutdown()
        if self.ingestor is not None:
            self.ingestor.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.link is not None:
            self.link.close()
        if self.client_id_lock is not None:
            self.client_id_lock.close()
        if self.broker is not None:
            await self.broker.stop()
        if self.engine is not None:
            self.engine.dispose()

    def health(self) -> dict:
        """Database, broker and scheduler state, for /api/v1/health."""
        db_ok = False
        try:
            with self.session_factory() as session:
                session.execute(text("SELECT 1"))
            db_ok = True
        except Exception as exc:  # reported, not raised: health must answer
            log.warning("health: database check failed: %s", exc)
        broker_ok = bool(self.link and self.link.connected)
        # A stand-by (another process holds the runner lock) is healthy: it serves the API and
        # takes over when the runner goes.
        role = self.runner.role if self.runner else "stopped"
        sched_ok = role in ("active", "standby")
        return {
            "status": "ok" if db_ok and broker_ok and sched_ok else "degraded",
            "database": {"ok": db_ok, "backend": self.engine.dialect.name if self.engine else None},
            "broker": {"ok": broker_ok, "url": _redact(self.broker_url), "embedded": self.broker is not None},
            "scheduler": {
                "ok": sched_ok,
                "role": role,
                "lock": self.runner.describe_lock() if self.runner else None,
                "jobs": self.runner.job_count() if role == "active" else 0,
            },
            "ingest": dict(self.ingestor.counts) if self.ingestor else {},
        }


def _redact(url: str) -> str:
    """The broker URL without its user name and password (an `@` or `:` in them included)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    # hostname/port come from after the last `@`, as every MQTT client reads the URL.
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))
